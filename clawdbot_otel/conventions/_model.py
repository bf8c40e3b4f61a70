"""The shapes of the catalogue: metrics, labels, span categories, log fields.

The data itself lives in the sibling modules; everything else in the project (facade, docs, rules,
dashboards, tests) reads it from here instead of writing a name by hand.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = [
    "ANY_VALUE",
    "AttributeSpec",
    "Kind",
    "LabelSpec",
    "LogField",
    "LogLevel",
    "MetricSpec",
    "RecordingRule",
    "SpanCategory",
    "prometheus_name",
]


class Kind(enum.StrEnum):
    """Instrument kinds. Gauges are observable instruments fed by `gauge()` calls and callbacks."""

    COUNTER = "counter"
    UPDOWN_COUNTER = "updown_counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"

    @property
    def prometheus_type(self) -> str:
        return {
            Kind.COUNTER: "counter",
            Kind.HISTOGRAM: "histogram",
        }.get(self, "gauge")


#: Marker for a free-form label: any string, capped in distinct values per metric.
ANY_VALUE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """One label key of a metric. `values` empty means free-form (capped), else an enumeration.

    Enumerated labels fold values outside `values` into `other` (production) or raise (strict).
    """

    name: str
    values: frozenset[str] = ANY_VALUE
    description: str = ""

    @property
    def enumerated(self) -> bool:
        return bool(self.values)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One catalogue metric: the documented name and everything the SDK and Prometheus need."""

    name: str
    """The documented name (the design's tables), used in the facade and docs."""
    otel_name: str
    """The OTel instrument name: dot-namespaced, no unit in the name."""
    kind: Kind
    unit: str
    """UCUM unit (annotations in braces for counts)."""
    description: str
    collection_point: str
    labels: tuple[LabelSpec, ...] = ()
    buckets: tuple[float, ...] = ()
    """Explicit histogram bucket boundaries, in `unit`."""
    source: str = "design table"
    """Where the name comes from: the design's metric tables, elsewhere in the design, or ours."""
    note: str = ""
    """Decisions: deviations from the documented name, dropped labels, cardinality bounds."""

    @property
    def prometheus_name(self) -> str:
        return prometheus_name(self.otel_name, self.unit, self.kind)

    @property
    def deviation(self) -> str:
        """Why the Prometheus name differs from the documented one, or '' when it does not."""
        if self.prometheus_name == self.name:
            return ""
        return self.note or f"the collector's translation gives {self.prometheus_name}"

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


@dataclass(frozen=True, slots=True)
class RecordingRule:
    """A name the design uses that is computed by Prometheus from a catalogue histogram."""

    name: str
    expr: str
    description: str
    source_metric: str


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One span attribute. `captures` says which 'captured data' item of the design it carries."""

    key: str
    type: str
    description: str
    captures: str = ""
    opt_in: bool = False
    """Content that is only recorded when content capture is enabled (redacted and truncated)."""


@dataclass(frozen=True, slots=True)
class SpanCategory:
    """A span category of the design, with its OTel span name, kind and attributes."""

    name: str
    description: str
    span_name: str
    """Template of the span name, `{placeholders}` filled from attributes."""
    span_kind: str
    attributes: tuple[AttributeSpec, ...]
    gen_ai_operation: str = ""
    source: str = "design table"
    captured_data: str = ""

    @property
    def attribute_keys(self) -> frozenset[str]:
        return frozenset(a.key for a in self.attributes)


@dataclass(frozen=True, slots=True)
class LogLevel:
    name: str
    value: int
    otel_severity_number: int
    usage: str


@dataclass(frozen=True, slots=True)
class LogField:
    name: str
    type: str
    description: str
    required: bool = False
    example: str = ""
    aliases: tuple[str, ...] = field(default=())


# UCUM -> Prometheus unit words, as the collector's default translation (otlptranslator) maps them.
_UNIT_WORDS: dict[str, str] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
_PER_UNIT_WORDS: dict[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_INVALID = re.compile(r"[^a-zA-Z0-9]+")


def prometheus_name(otel_name: str, unit: str, kind: Kind) -> str:
    """The Prometheus name that the collector's default translation gives an OTel metric.

    Rules (otlptranslator, `UnderscoreEscapingWithSuffixes`): non-alphanumerics become `_`; the unit
    word is appended unless a name token already is it; `{annotations}` add nothing; `a/b` adds
    `a_per_b`; gauges of unit `1` get `_ratio`; monotonic counters end in `_total`.
    """
    tokens = [t for t in _INVALID.split(otel_name) if t]
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    if main and not any(c in main for c in "{}"):
        word = _UNIT_WORDS.get(main, "" if main == "1" else _INVALID.sub("", main))
        if word and word not in tokens:
            tokens.append(word)
    if per and not any(c in per for c in "{}"):
        word = "per_" + _PER_UNIT_WORDS.get(per, per)
        if not "_".join(tokens).endswith(word):
            tokens.append(word)
    if kind is Kind.COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    elif unit == "1" and kind is not Kind.HISTOGRAM:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)

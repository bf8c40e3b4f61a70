"""The telemetry facade: catalogue names in, OTel instruments, spans and log records out.

`Telemetry` is built over explicit providers (tests pass in-memory ones); the module-level functions
of `clawdbot_otel` are bound to a default instance that `setup()` configures. Calls never raise into
the host in production mode: bad names, labels and values are dropped or folded into `other` and
counted in `clawdbot_otel_dropped_total`. Strict mode raises `TelemetryError` instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry._logs import LoggerProvider, get_logger_provider
from opentelemetry.metrics import CallbackOptions, Observation

from ._logging import LogPipeline, LogSink, StreamSink, build_processors, level_value
from ._redact import Redactor
from ._sdk_internals import HistogramSink, KeptValues, fast_export_enabled, metric_deferral
from ._spans import SpanHandle, SpanScope, TracingMixin
from .conventions import (
    LOG_CATEGORIES,
    METRICS,
    OTHER,
    SELF_METRICS,
    CounterName,
    GaugeName,
    HistogramName,
    Kind,
    MetricSpec,
    SpanCategoryName,
    nearest,
)

__all__ = ["Telemetry", "TelemetryError"]

_internal_log = logging.getLogger("clawdbot_otel")
# the context of sums handed over at collection: no span, so never an exemplar
_NO_CONTEXT = otel_context.Context()

Labels = Mapping[str, Any]


class TelemetryError(ValueError):
    """A name, label or value outside the catalogue (raised in strict mode only)."""


def _known_component(component: str) -> str:
    """A log category for the self-metric's `metric` label: free-form components would be unbounded."""
    return component if component in LOG_CATEGORIES else OTHER


def _describe_labels(spec: MetricSpec) -> str:
    if not spec.labels:
        return "none"
    parts = []
    for label in spec.labels:
        values = f" ({', '.join(sorted(label.values))})" if label.enumerated else " (free-form)"
        parts.append(label.name + values)
    return "; ".join(parts)


class _Metric:
    """A catalogue metric bound to its instrument, with the label check on the fast path."""

    __slots__ = ("_allowed", "_callbacks", "_combinations", "_direct", "_free", "_histogram", "_in_span", "_kept",
                 "_labels_of", "_lock", "_owner", "_provider", "_sdk_add", "_sdk_record", "_sinks", "_sum_lock",
                 "_sums", "_values", "add", "deferred", "record", "spec")
    _sdk_add: Callable[..., None]
    _sdk_record: Callable[..., None]
    _histogram: metrics.Histogram

    def __init__(self, owner: Telemetry, spec: MetricSpec, meter: metrics.Meter, deferral: str | None = None) -> None:
        self.spec = spec
        self._owner = owner
        self._lock = threading.Lock()
        # label -> set of values accepted without further checks: the enumeration for enumerated
        # labels, the (capped) set of values seen so far for free-form ones.
        self._allowed: dict[str, set[str] | frozenset[str]] = {
            label.name: (label.values if label.enumerated else {OTHER}) for label in spec.labels
        }
        # With two or more free-form labels the per-label caps still multiply (100 x 100 agent pairs):
        # such metrics also cap their distinct label sets.
        self._free = frozenset(label.name for label in spec.labels if not label.enumerated)
        self._combinations: set[frozenset[tuple[str, Any]]] | None = set() if len(self._free) > 1 else None
        self._values: dict[tuple[tuple[str, Any], ...], float] = {}
        self._callbacks: list[Callable[[], Iterable[tuple[float, Labels | None]]]] = []
        self.add: Callable[..., None] | None = None
        self.record: Callable[..., None] | None = None
        # counter increments summed here until the next collection (see `_add_deferred`)
        self._sums: dict[tuple[tuple[str, Any], ...], float] = {}
        self._labels_of: dict[tuple[tuple[str, Any], ...], Labels | None] = {}
        self._direct: set[tuple[tuple[str, Any], ...]] = set()
        self._sum_lock = threading.Lock()
        self._in_span = deferral == "trace_based"
        self.deferred = deferral is not None and spec.kind in (Kind.COUNTER, Kind.UPDOWN_COUNTER, Kind.HISTOGRAM)
        # histogram values kept until the next collection, and the SDK's aggregations they go to
        self._kept: dict[tuple[tuple[str, Any], ...], KeptValues] = {}
        self._sinks: dict[tuple[tuple[str, Any], ...], HistogramSink | None] = {}
        self._provider = owner.meter_provider
        name, unit, desc = spec.otel_name, spec.unit, spec.description
        if spec.kind is Kind.COUNTER or spec.kind is Kind.UPDOWN_COUNTER:
            create = meter.create_counter if spec.kind is Kind.COUNTER else meter.create_up_down_counter
            self._sdk_add = self.add = create(name, unit, desc).add
            if self.deferred:
                self.add = self._add_deferred
        elif spec.kind is Kind.HISTOGRAM:
            self._histogram = meter.create_histogram(
                name, unit, desc, explicit_bucket_boundaries_advisory=list(spec.buckets) or None
            )
            self._sdk_record = self.record = self._histogram.record
            if self.deferred:
                self.record = self._record_deferred
        else:
            # The callback finds the gauge by name at each collection, not this object: the SDK keeps the
            # first callback registered under a name (e.g. through the global proxy before setup()), so
            # after a rebind it must still reach the current instance's values and callbacks.
            meter.create_observable_gauge(name, [owner._gauge_callback(spec.name)], unit, desc)

    # --- labels ------------------------------------------------------------------------------
    def labels(self, labels: Labels) -> Labels | None:
        """The labels to record: the same mapping when clean (the fast path), else a fixed copy."""
        allowed = self._allowed
        for key, value in labels.items():
            values = allowed.get(key)
            if values is None or value not in values:
                labels = self._fix(labels)
                break
        if self._combinations is not None:
            return self._cap_combination(labels)
        return labels

    def _cap_combination(self, labels: Labels) -> Labels:
        combinations = self._combinations
        assert combinations is not None
        key = frozenset(labels.items())
        if key in combinations:
            return labels
        owner = self._owner
        with self._lock:
            if len(combinations) < owner.label_set_cap:
                combinations.add(key)
                return labels
        owner._count("label_set_cap", self.spec.name)
        return {k: (OTHER if k in self._free else v) for k, v in labels.items()}

    def _fix(self, labels: Labels) -> Labels:
        owner = self._owner
        fixed: dict[str, str] = {}
        for key, value in labels.items():
            values = self._allowed.get(key)
            label = next((lb for lb in self.spec.labels if lb.name == key), None)
            if values is None or label is None:
                owner._reject(
                    "unknown_label",
                    self.spec.name,
                    f"metric {self.spec.name} has no label {key!r}; allowed labels: {_describe_labels(self.spec)}",
                )
                continue
            if label.enumerated:
                if value not in values:
                    owner._reject(
                        "label_value_not_allowed",
                        self.spec.name,
                        f"metric {self.spec.name}: label {key}={value!r} is not one of "
                        f"{', '.join(sorted(label.values))}",
                    )
                    value = OTHER
                fixed[key] = value
                continue
            # free-form values come from frames and files: a token in a tool name must not become a series
            text = owner.redactor.scrub(value if isinstance(value, str) else str(value))
            if len(text) > owner.label_value_max_chars:
                text = text[: owner.label_value_max_chars]
                owner._count("label_value_truncated", self.spec.name)
            if text not in values:
                with self._lock:
                    if len(values) >= owner.label_value_cap:
                        owner._count("label_cardinality_cap", self.spec.name)
                        text = OTHER
                    else:
                        values.add(text)  # type: ignore[union-attr]
            fixed[key] = text
        return fixed

    # --- counters and histograms kept until collection (the fast path) ------------------------
    def _add_deferred(self, value: float, labels: Labels | None) -> None:
        """Sum the increment per label set; `flush` hands the SDK the sums when a reader collects.

        The SDK exports the same points: a label set's first increment still reaches it at once (as an
        `add(0)`: its start time), sums within an interval are added in the same order, and increments
        made in a sampled span (exemplar candidates) go to it directly, after what was waiting.
        """
        key = tuple(labels.items()) if labels else ()
        if self._in_span and trace.get_current_span().get_span_context().trace_flags.sampled:
            with self._sum_lock:
                waiting = self._sums.pop(key, None)
                # until the next collection this label set's increments go to the SDK one by one: a sum
                # made here would be added to its running total in another order (float rounding)
                self._direct.add(key)
                if key not in self._labels_of:
                    self._labels_of[key] = dict(labels) if labels else None
            if waiting is not None:
                self._sdk_add(waiting, labels, _NO_CONTEXT)
            self._sdk_add(value, labels)
            return
        with self._sum_lock:
            sums = self._sums
            total = sums.get(key)
            if total is not None:
                sums[key] = total + value
                return
            if key in self._direct:
                self._sdk_add(value, labels)
                return
            if key not in self._labels_of:
                self._labels_of[key] = dict(labels) if labels else None
                self._sdk_add(0, labels, _NO_CONTEXT)
            sums[key] = value

    def _record_deferred(self, value: float, labels: Labels | None) -> None:
        """Keep the value in its label set's buckets; `flush` adds them to the SDK's aggregations of that
        label set (`HistogramSink`). A label set's first value still goes through the SDK's `record` (its
        start time, and the aggregations to find), which the facade then takes over to add on in the
        SDK's order. Values recorded in a sampled span (exemplar candidates) go through `record` too,
        after what was kept; such a label set then stays on `record` until the next collection."""
        key = tuple(labels.items()) if labels else ()
        if self._in_span and trace.get_current_span().get_span_context().trace_flags.sampled:
            with self._sum_lock:
                kept = self._kept.pop(key, None)
                self._direct.add(key)
            if kept is not None:
                self._hand_over(key, kept)
            self._sdk_record(value, labels)
            if key not in self._sinks:
                self._sinks[key] = HistogramSink.of(self._provider, self._histogram, labels)
            return
        with self._sum_lock:
            kept = self._kept.get(key)
            if kept is not None:
                kept.add(value)
                return
            known = key in self._sinks
            sink = self._sinks.get(key)
            if sink is not None and key not in self._direct:
                self._kept[key] = KeptValues(sink.boundaries, value)
                return
            if not known:  # the label set's first value: the SDK makes its aggregations (their start time)
                self._sdk_record(value, labels)
                sink = self._sinks[key] = HistogramSink.of(self._provider, self._histogram, labels)
                kept = sink.take_over() if sink is not None else None
                if kept is not None:
                    self._kept[key] = kept
                else:
                    self._direct.add(key)
                return
        self._sdk_record(value, labels)

    def _hand_over(self, key: tuple[tuple[str, Any], ...], kept: KeptValues) -> None:
        sink = self._sinks[key]
        assert sink is not None  # values are only kept for a label set with a sink
        sink.add(kept)
        if not sink.current(self._provider):  # a reader was added or removed: the SDK keeps the label set
            self._sinks[key] = None

    def flush(self) -> None:
        """Hand what was counted and kept to the SDK (before each collection, and before a rebind)."""
        if not self._sums and not self._kept and not self._direct:
            return
        with self._sum_lock:
            sums, self._sums = self._sums, {}
            kept, self._kept = self._kept, {}
            self._direct.clear()
        labels_of = self._labels_of
        for key, total in sums.items():
            self._sdk_add(total, labels_of[key], _NO_CONTEXT)
        for key, values in kept.items():
            self._hand_over(key, values)

    # --- gauges -----------------------------------------------------------------------------
    def set(self, value: float, labels: Labels | None) -> None:
        self._values[tuple(labels.items()) if labels else ()] = value

    def add_callback(self, callback: Callable[[], Iterable[tuple[float, Labels | None]]]) -> None:
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], Iterable[tuple[float, Labels | None]]]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        observations = [Observation(v, dict(k)) for k, v in list(self._values.items())]
        for callback in list(self._callbacks):
            try:
                for value, labels in callback():
                    checked = self.labels(labels) if labels else labels
                    observations.append(Observation(value, checked))
            except Exception as exc:  # a failing callback must not stop the others
                self._owner._count("callback_error", self.spec.name)
                _internal_log.debug("gauge callback for %s failed: %r", self.spec.name, exc)
        return observations


class Telemetry(TracingMixin):
    """Metrics, spans and logs by catalogue name, over explicit OTel providers.

    Parameters
    ----------
    strict:
        raise `TelemetryError` on names, labels and values outside the catalogue (development, tests);
        otherwise drop or fold them and count the reason.
    label_value_cap:
        distinct values kept per free-form label of a metric; further values become `other`.
    label_set_cap:
        distinct label sets kept per metric with two or more free-form labels; further sets fold
        their free-form labels into `other`.
    capture_content:
        record tool params/results and request bodies (redacted, truncated) on spans.
    log_clock:
        nanoseconds since the epoch for log timestamps (tests pass a fixed clock).
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        strict: bool = False,
        label_value_cap: int = 100,
        label_set_cap: int = 1000,
        label_value_max_chars: int = 128,
        capture_content: bool = False,
        log_sinks: Iterable[LogSink] | None = None,
        log_level: str | int = "INFO",
        redactor: Redactor | None = None,
        log_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.strict = strict
        self.label_value_cap = label_value_cap
        self.label_set_cap = label_set_cap
        self.label_value_max_chars = label_value_max_chars
        self.capture_content = capture_content
        self.redactor = redactor or Redactor()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._reported: set[tuple[str, str]] = set()
        self._log_sinks: tuple[LogSink, ...] = tuple(log_sinks) if log_sinks is not None else (StreamSink(),)
        self._log_level = level_value(log_level)
        self._log_clock = log_clock
        self.bind(meter_provider, tracer_provider, logger_provider)

    def bind(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        log_sinks: Iterable[LogSink] | None = None,
    ) -> None:
        """(Re)build instruments, tracer and log pipeline over these providers (None: the globals)."""
        self.meter_provider = meter_provider or metrics.get_meter_provider()
        self.tracer_provider = tracer_provider or trace.get_tracer_provider()
        self.logger_provider = logger_provider or get_logger_provider()
        if log_sinks is not None:
            self._log_sinks = tuple(log_sinks)
        meter = self.meter_provider.get_meter("clawdbot_otel")
        previous: dict[str, _Metric] = getattr(self, "_metrics", {})
        for old in previous.values():  # what was kept belongs to the provider it was counted for
            old.flush()
        deferral = metric_deferral(self.meter_provider) if fast_export_enabled() else None
        self._metrics: dict[str, _Metric] = {
            spec.name: _Metric(self, spec, meter, deferral) for spec in (*METRICS, *SELF_METRICS)
        }
        self._keeping = tuple(m for m in self._metrics.values() if m.deferred)
        for name, old in previous.items():  # collection points registered them once; keep reading them
            for callback in old._callbacks:
                self._metrics[name].add_callback(callback)
        self._dropped_counter = self._metrics["clawdbot_otel_dropped_total"].add
        self.tracer = self.tracer_provider.get_tracer("clawdbot_otel")
        self.log_processors = build_processors(self.logger_provider, self.redactor, self._log_clock,
                                               on_drop=self._log_dropped)
        self._log_pipeline = LogPipeline(self.log_processors, self._log_sinks, self._log_level, self._sink_error)
        self._logger = self._log_pipeline.logger

    def _gauge_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            # The SDK runs every observable instrument's callback before it collects the synchronous ones:
            # what the facade kept (counter sums, histogram buckets) reaches it in time for this
            # collection, with what the callbacks counted.
            self._hand_over_kept()
            try:
                return self._metrics[name]._observe(options)
            finally:
                self._hand_over_kept()

        return observe

    def _hand_over_kept(self) -> None:
        for metric in self._keeping:
            metric.flush()

    # --- self-telemetry ---------------------------------------------------------------------
    def _count(self, reason: str, metric: str) -> None:
        self.dropped[(reason, metric)] += 1
        if self._dropped_counter is not None:
            self._dropped_counter(1, {"reason": reason, "metric": metric})

    def _reject(self, reason: str, metric: str, message: str) -> None:
        """Strict: raise. Production: count, and say it once per (reason, metric)."""
        if self.strict:
            raise TelemetryError(message)
        self._count(reason, metric)
        if (reason, metric) not in self._reported:
            self._reported.add((reason, metric))
            _internal_log.warning("clawdbot-otel dropped a measurement (%s): %s", reason, message)

    def _log_dropped(self, component: str) -> None:
        """The OTLP log export queue was full: the record still went to the sinks, not to OTLP."""
        self._count("log_queue_full", _known_component(component))

    def _sink_error(self, sink: str, exc: BaseException) -> None:
        # ENOSPC says more than OSError: name the errno when there is one.
        errno_code = exc.errno if isinstance(exc, OSError) else None
        reason = errno.errorcode.get(errno_code, type(exc).__name__) if errno_code else type(exc).__name__
        self.dropped[(f"log_sink:{reason}", sink)] += 1
        self.increment("clawdbot_otel_log_write_errors_total", {"sink": sink, "reason": reason})

    def _lookup(self, name: str, kinds: tuple[Kind, ...]) -> _Metric | None:
        metric = self._metrics.get(name)
        if metric is None:
            close = nearest(name, list(self._metrics))
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            self._reject(
                "unknown_metric", "unknown",
                f"unknown metric {name!r}{hint} (`clawdbot-otel catalogue` lists them)",
            )
            return None
        if metric.spec.kind not in kinds:
            self._reject(
                "wrong_kind", name,
                f"metric {name} is a {metric.spec.kind.value}; use "
                + {
                    Kind.COUNTER: "increment()",
                    Kind.UPDOWN_COUNTER: "increment() with a negative value to decrease",
                    Kind.GAUGE: "gauge()",
                    Kind.HISTOGRAM: "histogram()",
                }[metric.spec.kind],
            )
            return None
        return metric

    def _bad_value(self, name: str, value: object, why: str) -> None:
        self._reject("invalid_value", name, f"metric {name}: value {value!r} {why}")

    # --- metrics ----------------------------------------------------------------------------
    def increment(self, name: CounterName, labels: Labels | None = None, value: float = 1) -> None:
        """Add `value` to a counter (must be >= 0) or an up-down counter (any sign)."""
        try:
            metric = self._metrics.get(name)
            add = metric.add if metric is not None else None
            if add is None:
                self._lookup(name, (Kind.COUNTER, Kind.UPDOWN_COUNTER))
                return
            if not math.isfinite(value):  # the SDK would drop it without a word
                self._bad_value(name, value, "is not a finite number")
                return
            if value < 0 and metric.spec.kind is Kind.COUNTER:  # type: ignore[union-attr]
                self._bad_value(name, value, "is negative: counters only go up (use an up-down counter)")
                return
            add(value, metric.labels(labels) if labels else None)  # type: ignore[union-attr]
        except TelemetryError:
            raise
        except Exception:
            self._count("internal_error", name)

    def histogram(self, name: HistogramName, value: float, labels: Labels | None = None) -> None:
        """Record `value` (in the metric's unit, >= 0) in a histogram."""
        try:
            metric = self._metrics.get(name)
            record = metric.record if metric is not None else None
            if record is None:
                self._lookup(name, (Kind.HISTOGRAM,))
                return
            if not value >= 0 or value == math.inf:
                self._bad_value(name, value, "is not a finite number >= 0")
                return
            record(value, metric.labels(labels) if labels else None)  # type: ignore[union-attr]
        except TelemetryError:
            raise
        except Exception:
            self._count("internal_error", name)

    def gauge(self, name: GaugeName, value: float, labels: Labels | None = None) -> None:
        """Set a gauge's current value for these labels (reported at every export)."""
        try:
            metric = self._lookup(name, (Kind.GAUGE,))
            if metric is None:
                return
            if not math.isfinite(value):
                self._bad_value(name, value, "is not finite")
                return
            metric.set(value, metric.labels(labels) if labels else None)
        except TelemetryError:
            raise
        except Exception:
            self._count("internal_error", name)

    def observe(self, name: GaugeName, callback: Callable[[], Iterable[tuple[float, Labels | None]]]) -> None:
        """Register a callback read at each export; it yields `(value, labels)` pairs for a gauge."""
        metric = self._lookup(name, (Kind.GAUGE,))
        if metric is not None:
            metric.add_callback(callback)

    def unobserve(self, name: GaugeName, callback: Callable[[], Iterable[tuple[float, Labels | None]]]) -> None:
        """Stop reading a callback registered with `observe` (unknown callbacks are ignored)."""
        metric = self._metrics.get(name)
        if metric is not None:
            metric.remove_callback(callback)

    # --- logs -------------------------------------------------------------------------------
    def log(
        self,
        level: str | int,
        component: str,
        message: str,
        *,
        correlation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        span: SpanHandle | None = None,
        **fields: Any,
    ) -> None:
        """One structured log record: JSON line to the sinks and an OTLP log record.

        `fields` may set the record's other fields (request_id, session_id, duration_ms); anything
        else lands in `metadata`. `span` logs in that span's context when it is not the current one
        (a span started with `.start()` and ended elsewhere, as the frame observer does).
        """
        if span is not None:
            token = otel_context.attach(trace.set_span_in_context(span.span))
            try:
                self.log(level, component, message, correlation_id=correlation_id, metadata=metadata, **fields)
            finally:
                otel_context.detach(token)
            return
        try:
            levelno = level if isinstance(level, int) else level_value(level)
            pipeline = self._log_pipeline
            if pipeline.logger is self._logger:  # else someone swapped the logger: use theirs
                pipeline.log(levelno, component, message, correlation_id, metadata, fields)
            else:
                self._logger.log(
                    levelno, message, component=component, correlation_id=correlation_id,
                    metadata=metadata, **fields,
                )
        except Exception:
            if self.strict:
                raise
            self._count("log_error", _known_component(component))

    @property
    def logger(self) -> Any:
        """The structlog logger behind `log()`, for `logger.info("...", component=...)` style."""
        return self._logger

    def start_span(self, category: SpanCategoryName, name: str | None = None, **kwargs: Any) -> SpanScope:
        return self._start_span(category, name, **kwargs)

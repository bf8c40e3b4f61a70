"""Facade calls with arbitrary names, labels, values and nesting: outside strict mode nothing reaches the
host but its own exceptions, every rejection is counted, and what is recorded stays exportable."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from clawdbot_otel._span_export import encode_spans_fast
from clawdbot_otel.conventions import METRICS, SPAN_CATEGORIES, Kind
from clawdbot_otel.testing import capture_telemetry

_KIND = {m.name: m.kind for m in METRICS}
_LABELS = sorted({lb.name for m in METRICS for lb in m.labels})
_ATTRIBUTES = sorted({a.key for c in SPAN_CATEGORIES for a in c.attributes})

scalars = st.one_of(
    st.text(max_size=60), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.booleans(), st.none(),
    st.binary(max_size=16),
)
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4),
    st.tuples(inner, inner), st.frozensets(st.text(max_size=4), max_size=3)), max_leaves=12)
labels = st.one_of(st.none(), st.dictionaries(st.one_of(st.sampled_from(_LABELS), st.text(max_size=20)),
                                              scalars, max_size=5))
values = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 2**63]),  # the edges, often
                   st.floats(), st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.none(),
                   st.text(max_size=4))
names = st.one_of(st.sampled_from(sorted(_KIND)), st.text(max_size=40))


def _acceptable(op: str, name: str, value: Any) -> bool:
    """Whether a call must be recorded rather than rejected (labels aside: they are folded, not refused)."""
    kind = _KIND.get(name)
    kinds = {"increment": (Kind.COUNTER, Kind.UPDOWN_COUNTER), "histogram": (Kind.HISTOGRAM,),
             "gauge": (Kind.GAUGE,)}[op]
    if kind not in kinds or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= 0 or kind in (Kind.UPDOWN_COUNTER, Kind.GAUGE)


_OP = {Kind.COUNTER: "increment", Kind.UPDOWN_COUNTER: "increment", Kind.HISTOGRAM: "histogram", Kind.GAUGE: "gauge"}


def _catalogue_call(metric: Any) -> st.SearchStrategy[tuple[str, str, Any, Any]]:
    """A call with the right function and labels for `metric`: only its value can be wrong."""
    label_values = st.fixed_dictionaries({
        lb.name: st.sampled_from(sorted(lb.values)) if lb.enumerated else st.text(min_size=1, max_size=30)
        for lb in metric.labels})
    return st.tuples(st.just(_OP[metric.kind]), st.just(metric.name), label_values, values)


calls = st.one_of(st.sampled_from(METRICS).flatmap(_catalogue_call),
                  st.tuples(st.sampled_from(["increment", "histogram", "gauge"]), names, labels, values))


@given(st.lists(calls, max_size=25))
def test_metric_calls_never_raise_and_every_rejection_is_counted(calls: list[tuple[str, str, Any, Any]]) -> None:
    with capture_telemetry(strict=False) as cap:
        t = cap.telemetry
        for op, name, lbls, value in calls:
            before = sum(t.dropped.values())
            if op == "increment":
                t.increment(name, lbls, value)
            else:
                getattr(t, op)(name, value, lbls)
            if not _acceptable(op, name, value):
                assert sum(t.dropped.values()) > before, (op, name, value)
        for metric in cap.collect_metrics().values():  # exportable, and no series poisoned by NaN or inf
            for point in metric.data.data_points:
                for field in ("value", "sum"):
                    number = getattr(point, field, 0)
                    assert math.isfinite(number), (metric.name, point)


class HostError(Exception):
    """The host's own exception: it must come out of the span unchanged."""


span_attributes = st.dictionaries(st.one_of(st.sampled_from(_ATTRIBUTES), st.text(max_size=30)),
                                  st.one_of(scalars, st.lists(st.text(max_size=8), max_size=3), json_like), max_size=6)
categories = st.one_of(st.sampled_from([c.name for c in SPAN_CATEGORIES]), st.text(max_size=20))
span_trees = st.recursive(
    st.tuples(categories, st.one_of(st.none(), st.text(max_size=40)), span_attributes, st.booleans(), st.just(())),
    lambda children: st.tuples(categories, st.one_of(st.none(), st.text(max_size=40)), span_attributes,
                               st.booleans(), st.lists(children, max_size=3).map(tuple)),
    max_leaves=12)


def _count(tree: tuple[Any, ...]) -> int:
    return 1 + sum(_count(child) for child in tree[4])


def _run(t: Any, tree: tuple[Any, ...]) -> None:
    category, name, attributes, fail, children = tree
    with t.start_span(category, name, attributes=attributes) as span:
        for key, value in attributes.items():
            span.set(key, value)
        for child in children:
            with contextlib.suppress(HostError):
                _run(t, child)
        if fail:
            raise HostError(name)


@given(span_trees)
def test_span_trees_with_arbitrary_categories_and_attributes_only_raise_the_hosts_own_errors(
        tree: tuple[Any, ...]) -> None:
    with capture_telemetry(strict=False) as cap:
        try:
            _run(cap.telemetry, tree)
        except HostError:
            assert tree[3]
        spans = cap.finished_spans()
        assert len(spans) == _count(tree)
        encode_spans_fast(spans)  # the whole batch encodes: one bad value must not lose the others
        for span in spans:
            span.to_json()  # what the console exporter writes


levels = st.one_of(st.sampled_from(["DEBUG", "INFO", "WARN", "ERROR", "FATAL", "warning", "critical"]),
                   st.text(max_size=8), st.integers(min_value=-5, max_value=80))
field_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
log_calls = st.tuples(levels, st.text(max_size=30), st.text(max_size=200),
                      st.one_of(st.none(), st.dictionaries(st.text(max_size=20), json_like, max_size=5)),
                      st.dictionaries(field_names, json_like, max_size=4))


@given(st.lists(log_calls, max_size=15))
def test_log_calls_never_raise_and_each_writes_one_json_line_or_is_counted(
        calls: list[tuple[Any, str, str, Any, dict[str, Any]]]) -> None:
    with capture_telemetry(strict=False, log_level="DEBUG") as cap:
        t = cap.telemetry
        for level, component, message, metadata, fields in calls:
            lines = cap.log_stream.getvalue().count(b"\n")
            dropped = sum(t.dropped.values())
            t.log(level, component, message, metadata=metadata, **fields)
            written = cap.log_stream.getvalue().count(b"\n") - lines
            below_minimum = isinstance(level, int) and level < 10  # DEBUG is the capture's minimum
            counted = sum(t.dropped.values()) > dropped
            assert written == (0 if below_minimum or counted else 1), (level, fields)
        for line in cap.log_stream.getvalue().splitlines():
            record = orjson.loads(line)
            assert list(record)[:4] == ["timestamp", "level", "component", "message"]
        cap.otlp_logs()

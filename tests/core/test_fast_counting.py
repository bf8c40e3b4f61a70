"""CLAWDBOT_OTEL_FAST_EXPORT and counters, histograms: summed in the facade or one by one, the SDK exports the same.

Two facades run the same calls side by side, one with the switch on (increments summed and histogram
values kept per label set, handed to the SDK at collection) and one with it off (the SDK's `counter.add`
and `histogram.record` per call), each over
its own meter provider with a cumulative and a delta reader. Every exported field must be equal: names,
units, descriptions, temporality, monotonicity, attributes, values (float sums to the bit), exemplars;
start times must fall in the same step of the workload (the one that first counted the label set, or
the previous collection for delta points).
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.trace import TracerProvider

from clawdbot_otel import StreamSink, Telemetry, TelemetryError
from clawdbot_otel._sdk_internals import FAST_EXPORT_ENV

_DELTA: dict[type, AggregationTemporality] = {Counter: AggregationTemporality.DELTA,
                                               UpDownCounter: AggregationTemporality.DELTA,
                                               Histogram: AggregationTemporality.DELTA}


class _Side:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, fast: bool, strict: bool = False) -> None:
        monkeypatch.setenv(FAST_EXPORT_ENV, "1" if fast else "0")
        self.cumulative = InMemoryMetricReader()
        self.delta = InMemoryMetricReader(preferred_temporality=_DELTA)
        self.provider = MeterProvider(metric_readers=[self.cumulative, self.delta], shutdown_on_exit=False)
        self.telemetry = Telemetry(meter_provider=self.provider, strict=strict, log_sinks=[StreamSink(io.BytesIO())])
        self.summed = any(m.deferred for m in self.telemetry._metrics.values())

    def values(self, name: str, reader: InMemoryMetricReader | None = None) -> dict[tuple[Any, ...], float]:
        """One counter's values by sorted attributes, from a new collection."""
        return _values(self.sums(reader or self.cumulative)[name])

    def sums(self, reader: InMemoryMetricReader) -> dict[str, Metric]:
        data = reader.get_metrics_data()
        if data is None:  # nothing to report (a delta reader after a quiet interval)
            return {}
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                if isinstance(m.data, Sum | HistogramData)}


class _KeepExports(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class _Workload:
    """Runs each step on both sides at once and remembers when each step ran."""

    def __init__(self, sides: tuple[_Side, _Side]) -> None:
        self.sides = sides
        self.windows: list[tuple[int, int]] = []

    def step(self, call: Callable[[Telemetry], Any]) -> None:
        before = time.time_ns()
        for side in self.sides:
            call(side.telemetry)
        self.windows.append((before, time.time_ns()))

    def step_of(self, t: int) -> int:
        return next(i for i, (start, end) in enumerate(self.windows) if start <= t <= end)


def _values(metric: Metric) -> dict[tuple[Any, ...], float]:
    return {tuple(sorted((p.attributes or {}).items())): p.value
            for p in metric.data.data_points if isinstance(p, NumberDataPoint)}


def _value(point: Any) -> Any:
    if isinstance(point, HistogramDataPoint):
        return (point.count, point.sum, tuple(point.bucket_counts), tuple(point.explicit_bounds), point.min, point.max)
    return point.value


def _comparable(metric: Metric, workload: _Workload) -> Any:
    data = metric.data
    assert isinstance(data, Sum | HistogramData)
    monotonic = data.is_monotonic if isinstance(data, Sum) else None
    points = sorted((
        tuple(sorted((p.attributes or {}).items())), _value(p), workload.step_of(p.start_time_unix_nano),
        # which candidate a reservoir keeps is random (the SDK's own choice): compare where they come from
        [(e.trace_id, e.span_id, dict(e.filtered_attributes or {})) for e in p.exemplars],
    ) for p in data.data_points)
    return metric.name, metric.unit, metric.description, data.aggregation_temporality, monotonic, points


def _compare(sides: tuple[_Side, _Side], workload: _Workload) -> None:
    fast, sdk = sides
    for reader in ("cumulative", "delta"):
        before = time.time_ns()  # a collection is a step too: delta points start at the previous one
        collected = fast.sums(getattr(fast, reader)), sdk.sums(getattr(sdk, reader))
        workload.windows.append((before, time.time_ns()))
        got, want = ({name: _comparable(m, workload) for name, m in c.items()} for c in collected)
        assert got == want, reader


def _add_cost(t: Telemetry, cost: float) -> None:
    t.increment("session_cost_usd_total", {"model": "sonnet"}, cost)


def _record_latency(t: Telemetry, latency: float) -> None:
    t.histogram("gateway_request_latency_seconds", latency, {"method": "agent"})


def test_counters_and_histograms_kept_in_the_facade_export_what_the_sdk_exports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sides = (_Side(monkeypatch, fast=True), _Side(monkeypatch, fast=False))
    assert [s.summed for s in sides] == [True, False]
    work = _Workload(sides)
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    work.step(lambda t: t.increment("gateway_requests_total", {"method": "agent", "status": "success"}))
    for cost in (0.006555, 0.1, 0.2, 1e-9, 0.3):  # float sums must come out to the same bit
        work.step(functools.partial(_add_cost, cost=cost))
    work.step(lambda t: t.increment("session_active", {"type": "main"}))
    work.step(lambda t: t.increment("session_active", {"type": "main"}, -1))
    work.step(lambda t: t.increment("session_tool_calls_total", {"tool_name": "ls", "status": "success"}))
    work.step(lambda t: t.increment("session_tool_calls_total", {"tool_name": "bad\x00", "bogus": "x"}))
    work.step(lambda t: t.increment("gateway_requests_total"))  # no labels
    for latency in (0.7, 0.3, 0.6):  # the first value opens the series: the SDK's order, (0.7 + 0.3) + 0.6
        work.step(functools.partial(_record_latency, latency=latency))
    work.step(lambda t: t.histogram("session_duration_seconds", 3.5, {"type": "main", "model": "opus"}))
    _compare(sides, work)  # first collection: every series starts in the step that first counted it
    for latency in (0.3, 0.6, 0.0, 12.5, 1e-9, 400.0, 0.7):  # kept in the facade: buckets, min, max, sum
        work.step(functools.partial(_record_latency, latency=latency))
    work.step(lambda t: t.histogram("session_duration_seconds", 0.25, {"type": "main", "model": "opus"}))
    sampled = tracer.start_span("sampled")
    with trace.use_span(sampled):  # exemplars: only increments in a sampled span
        work.step(lambda t: t.increment("session_cost_usd_total", {"model": "sonnet"}, 0.7))
        work.step(functools.partial(_record_latency, latency=0.7))
    for value in (0.3, 0.6):  # after an exemplar candidate, in its interval: the same bits ((0.7 + 0.3) + 0.6)
        work.step(functools.partial(_add_cost, cost=value))
        work.step(functools.partial(_record_latency, latency=value))
    with trace.use_span(sampled, end_on_exit=True):
        work.step(lambda t: t.increment("session_cost_usd_total", {"model": "sonnet"}, 0.3))
        work.step(functools.partial(_record_latency, latency=2.0))
        work.step(lambda t: t.increment("gateway_requests_total", {"method": "agent", "status": "success"}))
        work.step(lambda t: t.increment("session_tokens_used", {"model": "opus", "token_type": "input"}, 10))
    work.step(lambda t: t.increment("session_cost_usd_total", {"model": "sonnet"}, 0.05))
    work.step(lambda t: t.increment("session_active", {"type": "cron"}, 2))
    _compare(sides, work)  # second: cumulative totals go on, deltas hold the interval only
    for latency in (0.6, 0.3, 7.0):
        work.step(functools.partial(_record_latency, latency=latency))
    work.step(lambda t: t.histogram("session_duration_seconds", 0.25, {"type": "main", "model": "opus"}))
    _compare(sides, work)  # third: only what was kept
    _compare(sides, work)  # fourth: nothing new (the delta reader reports no points)


def test_counts_are_handed_over_before_a_rebind_and_at_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    side = _Side(monkeypatch, fast=True)
    t = side.telemetry
    agent = {"method": "agent", "status": "success"}
    key = tuple(sorted(agent.items()))
    t.increment("gateway_requests_total", agent, 2)
    t.bind(t.meter_provider, t.tracer_provider, t.logger_provider)  # same provider, new instruments
    t.increment("gateway_requests_total", agent, 3)
    assert side.values("gateway.requests") == {key: 5}
    other = MeterProvider(metric_readers=[reader := InMemoryMetricReader()], shutdown_on_exit=False)
    t.increment("gateway_requests_total", agent, 4)
    t.bind(other, t.tracer_provider, t.logger_provider)  # the 4 belong to the first provider
    t.increment("gateway_requests_total", agent, 1)
    assert side.values("gateway.requests") == {key: 9}
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == "gateway.requests"]
    assert _values(metric) == {key: 1}
    exporter = _KeepExports()
    periodic = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, 3_600_000)],
                             shutdown_on_exit=False)
    t.bind(periodic, t.tracer_provider, t.logger_provider)
    t.increment("gateway_requests_total", agent, 6)
    periodic.shutdown()  # the reader's last export, with what was summed since
    (last,) = [m for data in exporter.exported for rm in data.resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics if m.name == "gateway.requests"]
    assert _values(last) == {key: 6}


def test_bad_increments_are_still_rejected_counted_or_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    side = _Side(monkeypatch, fast=True)
    side.telemetry.increment("gateway_requests_total", {"method": "nope", "status": "success"})
    side.telemetry.increment("session_cost_usd_total", {"model": "sonnet"}, -1)
    dropped = side.values("clawdbot_otel.dropped")
    assert dropped == {(("metric", "gateway_requests_total"), ("reason", "label_value_not_allowed")): 1,
                       (("metric", "session_cost_usd_total"), ("reason", "invalid_value")): 1}
    strict = _Side(monkeypatch, fast=True, strict=True)
    with pytest.raises(TelemetryError, match="is not one of"):
        strict.telemetry.increment("gateway_requests_total", {"method": "nope", "status": "success"})

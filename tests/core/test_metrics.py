"""Metrics through the facade arrive as the catalogue says; bad input raises (strict) or is counted."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

from clawdbot_otel import TelemetryError
from clawdbot_otel.conventions import METRICS, OTHER, Kind, MetricSpec
from clawdbot_otel.testing import Capture, capture_telemetry


def _labels_for(spec: MetricSpec) -> dict[str, str]:
    return {label.name: (sorted(label.values - {OTHER})[0] if label.enumerated else "free-value")
            for label in spec.labels}


def _record(cap: Capture, spec: MetricSpec, labels: dict[str, str]) -> None:
    t = cap.telemetry
    if spec.kind in (Kind.COUNTER, Kind.UPDOWN_COUNTER):
        t.increment(spec.name, labels, 3)
    elif spec.kind is Kind.GAUGE:
        t.gauge(spec.name, 3, labels)
    else:
        t.histogram(spec.name, 3, labels)


@pytest.mark.parametrize("spec", METRICS, ids=lambda m: m.name)
def test_each_catalogue_metric_arrives_with_its_otel_name_unit_kind_and_labels(spec: MetricSpec) -> None:
    with capture_telemetry() as cap:
        labels = _labels_for(spec)
        _record(cap, spec, labels)
        metric = cap.collect_metrics()[spec.otel_name]
        assert metric.unit == spec.unit
        assert metric.description == spec.description
        data = metric.data
        if spec.kind is Kind.COUNTER:
            assert isinstance(data, Sum) and data.is_monotonic
        elif spec.kind is Kind.UPDOWN_COUNTER:
            assert isinstance(data, Sum) and not data.is_monotonic
        elif spec.kind is Kind.GAUGE:
            assert isinstance(data, Gauge)
        else:
            assert isinstance(data, Histogram)
            assert tuple(data.data_points[0].explicit_bounds) == spec.buckets
        (point,) = data.data_points
        assert dict(point.attributes or {}) == labels
        value = point.sum if spec.kind is Kind.HISTOGRAM else point.value
        assert value == 3


def _dropped(cap: Capture) -> dict[tuple[str, str], float]:
    return {(p.attributes["reason"], p.attributes["metric"]): p.value
            for p in cap.metric_points("clawdbot_otel.dropped")}


BAD_CALLS: list[tuple[str, Any, str, str]] = [
    ("increment", ("gateway_request_total",), "unknown_metric", "did you mean gateway_requests_total"),
    ("increment", ("gateway_requests_total", {"methd": "agent"}), "unknown_label",
     "allowed labels: method"),
    ("increment", ("gateway_requests_total", {"method": "agent", "status": "ok"}), "label_value_not_allowed",
     "not one of failure, other, success, timeout"),
    ("increment", ("session_duration_seconds",), "wrong_kind", "use histogram()"),
    ("increment", ("gateway_requests_total", None, -1), "invalid_value", "counters only go up"),
    ("histogram", ("gateway_request_latency_seconds", float("nan")), "invalid_value", "finite"),
    ("gauge", ("spawn_queue_depth", float("inf")), "invalid_value", "not finite"),
]


@pytest.mark.parametrize(("method", "args", "reason", "message"), BAD_CALLS, ids=[c[2] + ":" + c[0] for c in BAD_CALLS])
def test_strict_mode_raises_a_clear_error(method: str, args: Any, reason: str, message: str) -> None:
    with capture_telemetry(strict=True) as cap, pytest.raises(TelemetryError, match=message):
        getattr(cap.telemetry, method)(*args)


@pytest.mark.parametrize(("method", "args", "reason", "message"), BAD_CALLS, ids=[c[2] + ":" + c[0] for c in BAD_CALLS])
def test_production_mode_never_raises_and_counts_the_reason(method: str, args: Any, reason: str, message: str) -> None:
    with capture_telemetry(strict=False) as cap:
        getattr(cap.telemetry, method)(*args)
        getattr(cap.telemetry, method)(*args)
        counted = {r: v for (r, _m), v in _dropped(cap).items()}
        assert counted.get(reason) == 2


def test_production_mode_folds_an_unknown_enumerated_value_into_other_and_keeps_the_count() -> None:
    with capture_telemetry(strict=False) as cap:
        t = cap.telemetry
        t.increment("session_total", {"type": "main", "model": "gpt-9"})
        t.increment("session_total", {"type": "main", "model": "opus"})
        points = {p.attributes["model"]: p.value for p in cap.metric_points("session")}
        assert points == {"other": 1, "opus": 1}


def test_a_hundred_thousand_distinct_free_label_values_stay_within_the_cap() -> None:
    with capture_telemetry(strict=False, label_value_cap=50) as cap:
        t = cap.telemetry
        for i in range(100_000):
            t.increment("session_tool_calls_total", {"tool_name": f"tool-{i}", "status": "success"})
        points = cap.metric_points("session.tool_calls")
        assert len(points) <= 50
        assert sum(p.value for p in points) == 100_000  # folded, not lost
        other = next(p for p in points if p.attributes["tool_name"] == OTHER)
        assert other.value == 100_000 - 49
        assert _dropped(cap)[("label_cardinality_cap", "session_tool_calls_total")] == 100_000 - 49


def test_long_free_label_values_are_truncated() -> None:
    with capture_telemetry(strict=False, label_value_max_chars=16) as cap:
        cap.telemetry.increment("scheduler_jobs_total", {"job_name": "x" * 500, "status": "success"})
        (point,) = cap.metric_points("scheduler.jobs")
        assert point.attributes["job_name"] == "x" * 16


def test_updown_counter_and_gauge_callbacks() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry
        t.increment("session_active", {"type": "main"})
        t.increment("session_active", {"type": "main"})
        t.increment("session_active", {"type": "main"}, value=-1)
        t.gauge("gateway_active_connections", 5)  # the design's API example
        t.observe("resource_disk_free_bytes", lambda: [(10.0, {"path": "/a"}), (20.0, {"path": "/b"})])
        assert cap.metric_points("session.active")[0].value == 1
        assert cap.metric_points("gateway.active_connections")[0].value == 5
        disk = {p.attributes["path"]: p.value for p in cap.metric_points("resource.disk.free")}
        assert disk == {"/a": 10.0, "/b": 20.0}


def test_a_failing_gauge_callback_is_counted_and_does_not_hide_other_values() -> None:
    def broken() -> list[tuple[float, dict[str, str]]]:
        raise OSError("disk went away")

    with capture_telemetry(strict=False) as cap:
        t = cap.telemetry
        t.observe("resource_disk_free_bytes", broken)
        t.observe("resource_disk_free_bytes", lambda: [(5.0, {"path": "/ok"})])
        collected = cap.collect_metrics()  # one export: each callback runs once
        assert [p.value for p in collected["resource.disk.free"].data.data_points] == [5.0]
        dropped = collected["clawdbot_otel.dropped"].data.data_points
        assert [(p.attributes["reason"], p.value) for p in dropped] == [("callback_error", 1)]


def test_unobserve_stops_reading_a_callback() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry

        def depth() -> list[tuple[float, None]]:
            return [(7.0, None)]

        t.observe("spawn_queue_depth", depth)
        assert [p.value for p in cap.metric_points("spawn.queue.depth")] == [7.0]
        t.unobserve("spawn_queue_depth", depth)
        assert cap.metric_points("spawn.queue.depth") == []


def test_two_free_labels_are_capped_per_label_set_not_only_per_label() -> None:
    # inbox_messages_total has from_agent and to_agent: 100 x 100 pairs would pass the per-label caps.
    with capture_telemetry(strict=False) as cap:
        t = cap.telemetry
        for i in range(100):
            for j in range(100):
                t.increment("inbox_messages_total", {"event": "created", "from_agent": f"a{i}", "to_agent": f"b{j}"})
        points = cap.metric_points("inbox.messages")
        assert len(points) == 1000 + 1  # the default label-set cap, plus the folded set
        folded = next(p for p in points if p.attributes["from_agent"] == OTHER)
        assert folded.attributes == {"event": "created", "from_agent": OTHER, "to_agent": OTHER}
        assert sum(p.value for p in points) == 10_000  # folded, not lost
        assert _dropped(cap)[("label_set_cap", "inbox_messages_total")] == 10_000 - 1000


def test_the_default_cap_bounds_a_hundred_thousand_values() -> None:
    with capture_telemetry(strict=False) as cap:
        for i in range(100_000):
            cap.telemetry.increment("scheduler_jobs_total", {"job_name": f"job-{i}", "status": "success"})
        points = cap.metric_points("scheduler.jobs")
        assert len(points) == 100
        assert sum(p.value for p in points) == 100_000


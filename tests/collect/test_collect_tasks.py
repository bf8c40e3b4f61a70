"""Task completions (counters, histograms, 24 h completion rate) and validation spans."""

from __future__ import annotations

import pytest

from clawdbot_otel.collect import TaskInstrumentation
from clawdbot_otel.testing import Capture

from .helpers import T0, FakeClock, histogram, value


@pytest.fixture
def tasks(cap: Capture, clock: FakeClock) -> TaskInstrumentation:
    return TaskInstrumentation(cap.telemetry, now=clock)


def test_completions_feed_counters_histograms_and_rate(cap: Capture, tasks: TaskInstrumentation) -> None:
    tasks.complete("t1", "success", "p3", duration_s=90.0, latency_s=120.0)
    tasks.complete("t2", "failure", "p3", duration_s=10.0)
    tasks.complete("t3", "success", "p1")
    tasks.complete("t4", "timeout", "p1")
    assert value(cap, "task.completion", status="success", phase="p3") == 1
    assert value(cap, "task.completion", status="failure", phase="p3") == 1
    assert value(cap, "task.completion", status="timeout", phase="p1") == 1
    assert histogram(cap, "task.duration", phase="p3") == (2, 100.0)
    assert histogram(cap, "task.latency", phase="p3") == (1, 120.0)
    assert value(cap, "task.completion_rate") == 0.5


def test_unknown_status_is_other(cap: Capture, tasks: TaskInstrumentation) -> None:
    tasks.complete("t1", "abandoned", "p2")
    assert value(cap, "task.completion", status="other", phase="p2") == 1
    assert value(cap, "task.completion_rate") == 0.0


def test_rate_covers_the_last_24_hours_only(cap: Capture, tasks: TaskInstrumentation, clock: FakeClock) -> None:
    assert value(cap, "task.completion_rate") is None  # no completions: no made-up rate
    tasks.complete("old", "failure", "p1")
    clock.advance(12 * 3600)
    tasks.complete("new", "success", "p1")
    assert value(cap, "task.completion_rate") == 0.5
    clock.advance(12 * 3600 + 60)  # the failure is now more than 24 h old
    assert value(cap, "task.completion_rate") == 1.0
    clock.advance(86400)
    assert value(cap, "task.completion_rate") is None


def test_rate_is_exact_across_many_minutes(cap: Capture, tasks: TaskInstrumentation, clock: FakeClock) -> None:
    for i in range(300):  # ten completions a minute for half an hour
        tasks.complete(f"t{i}", "success" if i % 3 else "failure", "p1")
        if i % 10 == 9:
            clock.advance(60)
    assert value(cap, "task.completion_rate") == pytest.approx(2 / 3)


def test_validation_pass_and_fail(cap: Capture, tasks: TaskInstrumentation) -> None:
    tasks.validate("L1", True, task_id="t1", evidence="tests green", duration_s=2.0)
    tasks.validate("L2", False, reason="missing evidence", task_id="t1")
    assert value(cap, "task.validation.passes", layer="L1") == 1
    assert value(cap, "task.validation.failures", layer="L2", reason="missing evidence") == 1
    passed, failed = cap.spans_by_category("validation")
    assert passed.name == "validate L1"
    assert (passed.start_time, passed.end_time) == (int((T0 - 2) * 1e9), int(T0 * 1e9))
    assert dict(passed.attributes or {})["clawdbot.validation.result"] == "pass"
    assert dict(passed.attributes or {})["clawdbot.validation.evidence"] == "tests green"
    attrs = dict(failed.attributes or {})
    assert attrs["clawdbot.validation.result"] == "fail"
    assert attrs["clawdbot.validation.reason"] == "missing evidence"
    assert attrs["clawdbot.task.id"] == "t1"


def test_validation_layer_outside_the_catalogue_is_other(cap: Capture, tasks: TaskInstrumentation) -> None:
    tasks.validate("L4", False)
    assert value(cap, "task.validation.failures", layer="other", reason="unspecified") == 1


def test_validation_under_a_parent(cap: Capture, tasks: TaskInstrumentation) -> None:
    with cap.telemetry.session_span("main") as session:
        tasks.validate("L3", True, parent=session)
    [span] = cap.spans_by_category("validation")
    assert span.parent is not None and format(span.parent.span_id, "016x") == session.span_id

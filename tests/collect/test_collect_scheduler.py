"""Scheduler: one job span per run, run/latency/error counters, active runs, next-run gauge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.collect import SchedulerInstrumentation
from clawdbot_otel.testing import Capture

from .helpers import T0, FakeClock, histogram, logs, value


@pytest.fixture
def sched(cap: Capture, clock: FakeClock) -> SchedulerInstrumentation:
    # One clock for both: run durations and next-run times are then exact.
    return SchedulerInstrumentation(cap.telemetry, clock=clock, now=clock)


def test_sync_decorator_success(cap: Capture, sched: SchedulerInstrumentation, clock: FakeClock) -> None:
    @sched.job("cleanup")
    def cleanup(n: int) -> int:
        clock.advance(2.5)
        assert value(cap, "scheduler.jobs.active") == 1
        return n * 2

    assert cleanup(21) == 42
    assert cleanup(1) == 2
    assert value(cap, "scheduler.jobs", job_name="cleanup", status="success") == 2
    assert histogram(cap, "scheduler.job.latency", job_name="cleanup") == (2, 5.0)
    assert value(cap, "scheduler.jobs.active") == 0
    spans = cap.spans_by_category("job")
    assert [s.name for s in spans] == ["cron.job cleanup"] * 2
    assert all(s.status.status_code is StatusCode.OK for s in spans)
    assert dict(spans[0].attributes or {})["clawdbot.job.trigger"] == "schedule"
    assert logs(cap, "Job success")[0]["duration_ms"] == 2500.0


async def test_async_failure_propagates_and_is_counted(cap: Capture, sched: SchedulerInstrumentation) -> None:
    @sched.job("coordinator", job_id="j-7")
    async def coordinator() -> None:
        raise ValueError("bad config")

    with pytest.raises(ValueError, match="bad config"):
        await coordinator()
    assert value(cap, "scheduler.jobs", job_name="coordinator", status="failure") == 1
    assert value(cap, "scheduler.job.errors", job_name="coordinator", error_type="runtime") == 1
    assert value(cap, "scheduler.jobs.active") == 0
    [span] = cap.spans_by_category("job")
    assert span.status.status_code is StatusCode.ERROR
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "ValueError"
    assert attrs["clawdbot.job.id"] == "j-7"
    assert [e.name for e in span.events] == ["exception"]
    assert logs(cap, "Job failure")[0]["level"] == "ERROR"


async def test_timeout_is_its_own_status(cap: Capture, sched: SchedulerInstrumentation) -> None:
    with pytest.raises(TimeoutError):
        async with sched.job("slow"):
            await asyncio.wait_for(asyncio.Event().wait(), 0.001)
    assert value(cap, "scheduler.jobs", job_name="slow", status="timeout") == 1
    assert value(cap, "scheduler.job.errors", job_name="slow", error_type="timeout") == 1
    [span] = cap.spans_by_category("job")
    assert dict(span.attributes or {})["error.type"] == "timeout"
    assert span.status.status_code is StatusCode.ERROR


def test_work_inside_a_run_is_its_child(cap: Capture, sched: SchedulerInstrumentation) -> None:
    with sched.job("report") as run, cap.telemetry.tool_call_span("exec"):
        pass
    [tool] = cap.spans_by_category("tool_call")
    [job] = cap.spans_by_category("job")
    assert tool.parent is not None and tool.parent.span_id == job.context.span_id
    assert run.span_id == format(job.context.span_id, "016x")


async def test_cancelled_run_is_not_a_failure(cap: Capture, sched: SchedulerInstrumentation) -> None:
    @sched.job("long")
    async def long() -> None:
        await asyncio.Event().wait()

    task = asyncio.ensure_future(long())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(cap, "scheduler.jobs", job_name="long", status="failure") is None
    assert value(cap, "scheduler.jobs.active") == 0
    assert dict(cap.spans_by_category("job")[0].attributes or {})["error.type"] == "cancelled"


def test_next_run_counts_down_and_never_goes_negative(cap: Capture, sched: SchedulerInstrumentation,
                                                       clock: FakeClock) -> None:
    sched.set_next_run("coordinator", T0 + 300)
    sched.set_next_run("digest", datetime.fromtimestamp(T0 + 60, UTC))
    assert value(cap, "scheduler.next_run", job_name="coordinator") == 300
    assert value(cap, "scheduler.next_run", job_name="digest") == 60
    clock.advance(120)
    assert value(cap, "scheduler.next_run", job_name="coordinator") == 180
    assert value(cap, "scheduler.next_run", job_name="digest") == 0
    sched.set_next_run("digest", None)
    assert value(cap, "scheduler.next_run", job_name="digest") is None


def test_span_carries_the_next_run(cap: Capture, sched: SchedulerInstrumentation) -> None:
    sched.set_next_run("cleanup", T0 + 90)
    with sched.job("cleanup"):
        pass
    assert dict(cap.spans_by_category("job")[0].attributes or {})["clawdbot.job.next_run_s"] == 90


"""Scheduler: one job span per run, run/latency/error counters, active runs, next-run gauge, CronScheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.collect import CronScheduler, SchedulerInstrumentation
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


async def test_cron_runs_due_jobs_and_logs_schedule_changes(cap: Capture, sched: SchedulerInstrumentation,
                                                            clock: FakeClock) -> None:
    runs: list[float] = []

    async def tick() -> None:
        runs.append(clock())

    cron = CronScheduler(sched)
    cron.add("tick", tick, every_s=60)
    await cron.run_due()
    assert runs == []
    assert value(cap, "scheduler.next_run", job_name="tick") == 60
    clock.advance(60)
    await cron.run_due()
    clock.advance(30)
    await cron.run_due()
    assert runs == [T0 + 60]
    cron.reschedule("tick", 10)
    assert cron.next_run("tick") == T0 + 100
    clock.advance(10)
    await cron.run_due()
    assert runs == [T0 + 60, T0 + 100]
    await cron.trigger("tick")
    cron.remove("tick")
    assert value(cap, "scheduler.jobs", job_name="tick", status="success") == 3
    assert [s.attributes["clawdbot.job.trigger"] for s in cap.spans_by_category("job")] == [  # type: ignore[index]
        "schedule", "schedule", "manual"]
    assert logs(cap, "Job scheduled")[0]["metadata"]["every_s"] == 60
    assert logs(cap, "Job schedule modified")[0]["metadata"] == {"job_name": "tick", "every_s": 10,
                                                                  "previous_every_s": 60}
    assert len(logs(cap, "Job removed")) == 1
    assert value(cap, "scheduler.next_run", job_name="tick") is None


async def test_cron_timeout_and_failure_do_not_stop_the_scheduler(cap: Capture, sched: SchedulerInstrumentation,
                                                                  clock: FakeClock) -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise RuntimeError("boom")

    cron = CronScheduler(sched)
    cron.add("hang", hang, every_s=5, first_run_in_s=0, timeout_s=0.001)
    cron.add("broken", broken, every_s=5, first_run_in_s=0)
    await cron.run_due()
    clock.advance(5)
    await cron.run_due()
    assert value(cap, "scheduler.jobs", job_name="hang", status="timeout") == 2
    assert value(cap, "scheduler.jobs", job_name="broken", status="failure") == 2


async def test_cron_skips_a_run_while_the_previous_one_is_going(cap: Capture, sched: SchedulerInstrumentation,
                                                                clock: FakeClock) -> None:
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    cron = CronScheduler(sched)
    cron.add("slow", slow, every_s=1, first_run_in_s=0)
    first = asyncio.ensure_future(cron.run_due())
    await asyncio.sleep(0)
    clock.advance(1)
    await cron.run_due()  # due again, still running: skipped
    assert len(logs(cap, "Job run skipped")) == 1
    release.set()
    await first
    assert value(cap, "scheduler.jobs", job_name="slow", status="success") == 1


async def test_cron_loop_runs_and_stop_cancels_without_failures(cap: Capture, sched: SchedulerInstrumentation,
                                                                clock: FakeClock) -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    cron = CronScheduler(sched)
    cron.add("forever", forever, every_s=3600, first_run_in_s=0)
    with cap.telemetry.request_span("cron.add"):
        cron.start()
    await asyncio.wait_for(started.wait(), 5)
    await cron.stop()
    assert value(cap, "scheduler.jobs.active") == 0
    assert value(cap, "scheduler.jobs", job_name="forever", status="failure") is None
    assert len(logs(cap, "Job cancelled")) == 1
    [span] = cap.spans_by_category("job")
    assert span.parent is None  # scheduled runs are root spans, whatever started the loop

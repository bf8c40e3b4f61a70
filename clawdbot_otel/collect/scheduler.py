"""Scheduler (cron) collection point: one `job` span and the scheduler_* metrics per job run.

    sched = SchedulerInstrumentation(telemetry)

    @sched.job("coordinator")            # sync or async function: one run per call
    async def coordinator() -> None: ...

    with sched.job("cleanup"):            # or a block (also `async with`)
        ...

    sched.set_next_run("coordinator", time.time() + 300)   # feeds scheduler_next_run_seconds

A run that raises `TimeoutError` (asyncio's too) has status `timeout`; any other exception is a
`failure` with error_type `runtime`. The exception always propagates. A cancelled run (scheduler
shutdown) is neither: it ends its span with `error.type=cancelled` and counts nothing but the
`scheduler_jobs_active` decrement, so every shutdown does not look like a failing job.

`CronScheduler` is a small interval scheduler over this instrumentation, for the embedded gateway
and the demo: it logs schedule modifications (job scheduled, modified, removed) as the design asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

from clawdbot_otel._facade import Telemetry
from clawdbot_otel._spans import SpanHandle, SpanScope

from ._gauges import GaugeCallbacks

__all__ = ["CronScheduler", "JobRun", "SchedulerInstrumentation"]

F = TypeVar("F", bound=Callable[..., Any])


def _epoch(when: float | datetime) -> float:
    return when.timestamp() if isinstance(when, datetime) else float(when)


class JobRun:
    """One run of a job: a context manager (sync and async) or, as a decorator, one run per call."""

    __slots__ = ("_handle", "_scope", "_started", "instrumentation", "job_id", "job_name", "trigger")

    def __init__(self, instrumentation: SchedulerInstrumentation, job_name: str, *, job_id: str | None = None,
                 trigger: str = "schedule") -> None:
        self.instrumentation = instrumentation
        self.job_name = job_name
        self.job_id = job_id
        self.trigger = trigger
        self._scope: SpanScope | None = None
        self._handle: SpanHandle | None = None
        self._started = 0.0

    def _fresh(self) -> JobRun:
        return JobRun(self.instrumentation, self.job_name, job_id=self.job_id, trigger=self.trigger)

    def __enter__(self) -> SpanHandle:
        instr = self.instrumentation
        telemetry = instr.telemetry
        self._scope = telemetry.job_span(self.job_name, job_id=self.job_id, trigger=self.trigger)
        self._handle = self._scope.__enter__()
        telemetry.increment("scheduler_jobs_active", None, 1)
        telemetry.log("DEBUG", "scheduler", "Job started",
                      metadata={"job_name": self.job_name, "job_id": self.job_id, "trigger": self.trigger})
        self._started = instr.clock()
        return self._handle

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        instr = self.instrumentation
        telemetry = instr.telemetry
        duration_s = max(0.0, instr.clock() - self._started)
        handle, scope = self._handle, self._scope
        assert handle is not None and scope is not None, "JobRun exited without being entered"
        name = self.job_name
        meta: dict[str, Any] = {"job_name": name, "job_id": self.job_id, "trigger": self.trigger}
        try:
            next_run_s = instr.seconds_to_next_run(name)
            if next_run_s is not None:
                handle.set("clawdbot.job.next_run_s", next_run_s)
            if isinstance(exc, asyncio.CancelledError):
                handle.set("error.type", "cancelled")
                telemetry.log("INFO", "scheduler", "Job cancelled", metadata=meta,
                              duration_ms=round(duration_s * 1000, 3))
                return
            if exc is None:
                status, error_type = "success", None
                handle.set_status("success")
            elif isinstance(exc, TimeoutError):
                status, error_type = "timeout", "timeout"
                handle.span.record_exception(exc)
                handle.set_status("timeout", f"{type(exc).__name__}: {exc}", "timeout")
            else:
                status, error_type = "failure", "runtime"
                handle.record_error(exc)
            telemetry.increment("scheduler_jobs_total", {"job_name": name, "status": status})
            telemetry.histogram("scheduler_job_latency_seconds", duration_s, {"job_name": name})
            if error_type is not None:
                telemetry.increment("scheduler_job_errors_total", {"job_name": name, "error_type": error_type})
                meta["error"] = f"{type(exc).__name__}: {exc}"
            telemetry.log("INFO" if status == "success" else "ERROR", "scheduler", f"Job {status}",
                          metadata={**meta, "status": status}, duration_ms=round(duration_s * 1000, 3))
        finally:
            telemetry.increment("scheduler_jobs_active", None, -1)
            scope.__exit__(None, None, None)  # status already set: end the span, restore the context

    async def __aenter__(self) -> SpanHandle:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return cast(F, wrapper)


class SchedulerInstrumentation:
    """Job runs and next-run times of a scheduler, as the catalogue's scheduler_* metrics.

    `clock` times runs (monotonic); `now` is the wall clock the next-run times are in (epoch s).
    """

    __slots__ = ("_gauges", "_next_runs", "clock", "now", "telemetry")

    def __init__(self, telemetry: Telemetry, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time) -> None:
        self.telemetry = telemetry
        self.clock = clock
        self.now = now
        self._next_runs: dict[str, float] = {}
        self._gauges = GaugeCallbacks(telemetry)
        self._gauges.observe("scheduler_next_run_seconds", self._observe_next_runs)

    def job(self, job_name: str, *, job_id: str | None = None, trigger: str = "schedule") -> JobRun:
        """A run of `job_name`: `with`, `async with`, or a decorator. trigger: schedule, manual, catch-up."""
        return JobRun(self, job_name, job_id=job_id, trigger=trigger)

    def set_next_run(self, job_name: str, when: float | datetime | None) -> None:
        """The next run of `job_name` (epoch seconds or an aware datetime); None: not scheduled."""
        if when is None:
            self._next_runs.pop(job_name, None)
        else:
            self._next_runs[job_name] = _epoch(when)

    def seconds_to_next_run(self, job_name: str) -> float | None:
        when = self._next_runs.get(job_name)
        return None if when is None else max(0.0, when - self.now())

    def close(self) -> None:
        """Stop reporting next-run gauges."""
        self._gauges.close()

    def _observe_next_runs(self) -> Iterable[tuple[float, dict[str, str]]]:
        now = self.now()
        # Computed at export time, so the gauge counts down between scheduler ticks; a run that is
        # due but not started yet reads 0, never a negative number.
        for name, when in list(self._next_runs.items()):
            yield max(0.0, when - now), {"job_name": name}


class _Job:
    __slots__ = ("every_s", "fn", "name", "next_run", "running", "timeout_s")

    def __init__(self, name: str, fn: Callable[[], Awaitable[object]], every_s: float, next_run: float,
                 timeout_s: float | None) -> None:
        self.name = name
        self.fn = fn
        self.every_s = every_s
        self.next_run = next_run
        self.timeout_s = timeout_s
        self.running: asyncio.Task[None] | None = None


def _check_interval(every_s: float) -> None:
    if not every_s > 0:
        raise ValueError(f"every_s must be > 0 seconds, not {every_s!r}")


class CronScheduler:
    """Runs registered async jobs every `every_s` seconds, each run instrumented.

    A run still going when its next one is due is not doubled: that run is skipped (and logged).
    Missed runs (the loop was busy or asleep) are not caught up: the next one is one interval on.
    `run_due()` runs what is due now and waits for it (tests drive it with an injected `now`).
    """

    __slots__ = ("_jobs", "_loop_task", "_wake", "instrumentation", "max_sleep_s", "now")

    def __init__(self, instrumentation: SchedulerInstrumentation, *, now: Callable[[], float] | None = None,
                 max_sleep_s: float = 60.0) -> None:
        self.instrumentation = instrumentation
        self.now = now or instrumentation.now
        self.max_sleep_s = max_sleep_s
        self._jobs: dict[str, _Job] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def jobs(self) -> dict[str, float]:
        """Job name -> interval in seconds."""
        return {name: job.every_s for name, job in self._jobs.items()}

    def next_run(self, name: str) -> float:
        return self._jobs[name].next_run

    def _log(self, message: str, **metadata: Any) -> None:
        self.instrumentation.telemetry.log("INFO", "scheduler", message, metadata=metadata)

    def add(self, name: str, fn: Callable[[], Awaitable[object]], every_s: float, *,
            first_run_in_s: float | None = None, timeout_s: float | None = None) -> None:
        """Schedule `fn` every `every_s` s; the first run after `first_run_in_s` (default: one interval)."""
        _check_interval(every_s)
        if name in self._jobs:
            raise ValueError(f"job {name!r} is already scheduled; use reschedule() or remove() first")
        first = self.now() + (every_s if first_run_in_s is None else first_run_in_s)
        self._jobs[name] = _Job(name, fn, every_s, first, timeout_s)
        self.instrumentation.set_next_run(name, first)
        self._log("Job scheduled", job_name=name, every_s=every_s, timeout_s=timeout_s,
                  next_run_in_s=first - self.now())
        self._wake.set()

    def reschedule(self, name: str, every_s: float) -> None:
        """Change the interval; the next run is one new interval from now (or sooner, if it was)."""
        _check_interval(every_s)
        job = self._jobs[name]
        old, job.every_s = job.every_s, every_s
        job.next_run = min(job.next_run, self.now() + every_s)
        self.instrumentation.set_next_run(name, job.next_run)
        self._log("Job schedule modified", job_name=name, every_s=every_s, previous_every_s=old)
        self._wake.set()

    def remove(self, name: str) -> None:
        """Unschedule (a run in progress finishes)."""
        self._jobs.pop(name)
        self.instrumentation.set_next_run(name, None)
        self._log("Job removed", job_name=name)
        self._wake.set()

    async def trigger(self, name: str) -> None:
        """Run a job now, outside its schedule (trigger=manual); waits for it."""
        await self._run(self._jobs[name], "manual")

    async def run_due(self) -> None:
        """Start every job that is due and wait for those runs."""
        tasks = self._launch_due()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _launch_due(self) -> list[asyncio.Task[None]]:
        now = self.now()
        started = []
        for job in list(self._jobs.values()):
            if job.next_run > now:
                continue
            if job.running is not None and not job.running.done():
                self._log("Job run skipped: previous run still going", job_name=job.name)
            else:
                job.running = asyncio.get_running_loop().create_task(self._run(job, "schedule"))
                started.append(job.running)
            job.next_run += job.every_s
            if job.next_run <= now:
                job.next_run = now + job.every_s
            self.instrumentation.set_next_run(job.name, job.next_run)
        return started

    async def _run(self, job: _Job, trigger: str) -> None:
        with contextlib.suppress(Exception):  # counted and logged by the instrumentation
            async with self.instrumentation.job(job.name, trigger=trigger):
                if job.timeout_s is not None:
                    await asyncio.wait_for(job.fn(), job.timeout_s)
                else:
                    await job.fn()

    async def run(self) -> None:
        """The scheduling loop: start what is due, sleep until the next due run or a modification."""
        while True:
            self._launch_due()
            self._wake.clear()
            upcoming = [job.next_run for job in self._jobs.values()]
            delay = min(upcoming) - self.now() if upcoming else self.max_sleep_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(delay, self.max_sleep_s)))

    def start(self) -> asyncio.Task[None]:
        if self._loop_task is None or self._loop_task.done():
            # A fresh context: scheduled runs are root spans, not children of whoever started us.
            self._loop_task = asyncio.get_running_loop().create_task(
                self.run(), name="clawdbot-otel CronScheduler", context=contextvars.Context())
        return self._loop_task

    async def stop(self) -> None:
        """Stop the loop and cancel runs in progress (they count as cancelled, not failed)."""
        tasks = [t for t in (self._loop_task, *(j.running for j in self._jobs.values())) if t is not None]
        self._loop_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

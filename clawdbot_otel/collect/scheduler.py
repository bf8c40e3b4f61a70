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

The scheduler itself is the application's (OpenClaw's own cron, observed from its `cron` events by the
gateway's frame observer, which also logs schedule changes): this module instruments runs, it does
not schedule them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

from clawdbot_otel import SpanHandle, SpanScope, Telemetry

from ._gauges import GaugeCallbacks

__all__ = ["JobRun", "SchedulerInstrumentation"]

_F = TypeVar("_F", bound=Callable[..., Any])


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

    def __call__(self, fn: _F) -> _F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await fn(*args, **kwargs)

            return cast(_F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return cast(_F, wrapper)


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


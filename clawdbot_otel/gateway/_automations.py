"""Automations: OpenClaw's cron jobs, from its `cron` events and `cron.list` answers, as the scheduler_*
metrics, one `job` span per run, and a `scheduler` log line per schedule change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clawdbot_otel import Telemetry
from clawdbot_otel.conventions import OTHER

from ._observing import LRU, MS, NS, error_type_of, frame_ns, num, source_error

__all__ = ["CronTracker"]

_CRON_STATUS = {"ok": "success", "success": "success", "error": "failure", "failed": "failure",
                "timeout": "timeout", "timed_out": "timeout"}
#: cron event action -> the design's schedule-modification log message
_SCHEDULE_CHANGES = {"added": "Job scheduled", "updated": "Job schedule modified", "removed": "Job removed"}


class CronTracker:
    """Running jobs, next runs and job names of the gateway's cron, as the frames show them."""

    def __init__(self, telemetry: Telemetry, *, run_timeout_ns: int, clock: Callable[[], int]) -> None:
        self.telemetry = telemetry
        self.run_timeout_ns = run_timeout_ns
        self.clock = clock
        self._seen = LRU(4096)
        self._running_jobs: dict[str, int] = {}  # job id -> when its `started` event arrived
        self._job_names: dict[str, str] = {}
        self._next_runs: dict[str, float] = {}  # job name -> next run, epoch s

    def sweep(self, now: int) -> int:
        stale = [j for j, started in self._running_jobs.items() if now - started > self.run_timeout_ns]
        for job_id in stale:
            del self._running_jobs[job_id]  # its `finished` event never came: not running any more
            self.telemetry.increment("scheduler_jobs_active", None, -1)
        return len(stale)

    def close(self) -> None:
        if self._running_jobs:
            self.telemetry.increment("scheduler_jobs_active", None, -len(self._running_jobs))
            self._running_jobs.clear()

    def _schedule_changed(self, action: str, job_id: str, name: str, next_run_ms: float | None) -> None:
        if action == "removed":
            self._next_runs.pop(name, None)
        self.telemetry.log("INFO", "scheduler", _SCHEDULE_CHANGES[action],
                           metadata={"job_id": job_id, "job_name": name, "next_run_ms": next_run_ms})

    def _job_name(self, job_id: str, payload: Mapping[str, Any]) -> str:
        name = payload.get("jobName") or payload.get("name")
        if isinstance(name, str) and name:
            if len(self._job_names) < 1000:
                self._job_names[job_id] = name
            return name
        return self._job_names.get(job_id, job_id)

    def event(self, payload: Mapping[str, Any], now: int) -> None:
        job_id = payload.get("jobId")
        action = payload.get("action")
        if not isinstance(job_id, str) or not isinstance(action, str):
            source_error(self.telemetry, "cron_event_shape")
            return
        if not self._seen.add(("cron", job_id, action, payload.get("runAtMs"), payload.get("ts"))):
            return
        name = self._job_name(job_id, payload)
        next_run = num(payload.get("nextRunAtMs"))
        if next_run is not None:
            self._set_next_run(name, next_run / 1000)
        tel = self.telemetry
        if action in _SCHEDULE_CHANGES:
            self._schedule_changed(action, job_id, name, next_run)
        elif action == "started":
            if job_id not in self._running_jobs and len(self._running_jobs) < 1000:
                self._running_jobs[job_id] = now
                tel.increment("scheduler_jobs_active", None, 1)
        elif action == "finished":
            if self._running_jobs.pop(job_id, None) is not None:
                tel.increment("scheduler_jobs_active", None, -1)
            status = _CRON_STATUS.get(str(payload.get("status") or "ok"), OTHER)
            tel.increment("scheduler_jobs_total", {"job_name": name, "status": status})
            duration_ms = num(payload.get("durationMs"))
            if duration_ms is not None and duration_ms >= 0:
                tel.histogram("scheduler_job_latency_seconds", duration_ms / 1000, {"job_name": name})
            error = payload.get("error")
            if status in ("failure", "timeout"):
                error_type = "timeout" if status == "timeout" else error_type_of({"message": error})
                tel.increment("scheduler_job_errors_total", {"job_name": name, "error_type": error_type})
            run_at = num(payload.get("runAtMs"))
            start = frame_ns(run_at, now)
            end = start + int((duration_ms or 0) * MS)
            span = tel.job_span(name, job_id=job_id, trigger=str(payload.get("trigger") or "schedule"),
                                start_time=start).start()
            if next_run is not None:
                span.set("clawdbot.job.next_run_s", round(max(next_run / 1000 - end / NS, 0.0), 3))
            if status == "success":
                span.set_status("success")
            else:
                span.set_status(status if status in ("failure", "timeout") else "failure",
                                str(error or status)[:500], "job")
            span.end(end)

    def job_list(self, payload: Mapping[str, Any], now: int) -> None:
        jobs = payload.get("jobs")
        if not isinstance(jobs, list):
            return
        for job in jobs[:200]:
            if not isinstance(job, dict) or not isinstance(job.get("id"), str):
                continue
            name = self._job_name(job["id"], job)
            state = job.get("state")
            next_run = num(state.get("nextRunAtMs")) if isinstance(state, dict) else None
            if next_run is not None and job.get("enabled", True):
                self._set_next_run(name, next_run / 1000)

    def _set_next_run(self, name: str, at_s: float) -> None:
        if name in self._next_runs or len(self._next_runs) < 200:
            self._next_runs[name] = at_s

    def next_run_observations(self) -> Iterable[tuple[float, Mapping[str, Any] | None]]:
        now_s = self.clock() / NS
        return [(max(at - now_s, 0.0), {"job_name": name}) for name, at in list(self._next_runs.items())]

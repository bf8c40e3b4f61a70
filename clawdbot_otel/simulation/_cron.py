"""The simulated gateway's cron: jobs on fixed intervals, each run an agent turn in its own `cron:<id>`
session, announced by `cron` events (started, finished) as OpenClaw's are."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._scheduler_files import now_ms

__all__ = ["DEFAULT_CRON_JOBS", "CronJob", "SimulatedCron"]


@dataclass(frozen=True)
class CronJob:
    id: str
    name: str
    every_s: float
    message: str


DEFAULT_CRON_JOBS = (
    CronJob("coordinator", "coordinator", 60.0, "coordinator sweep: check the task board and message builder"),
    CronJob("inbox-sweep", "inbox-sweep", 45.0, "inbox sweep: use a tool to list the inboxes"),
    CronJob("heartbeat-audit", "heartbeat-audit", 90.0, "heartbeat audit: use a tool to read heartbeats"),
)


DEFAULT_CRON_JOBS = (
    CronJob("coordinator", "coordinator", 60.0, "coordinator sweep: check the task board and message builder"),
    CronJob("inbox-sweep", "inbox-sweep", 45.0, "inbox sweep: use a tool to list the inboxes"),
    CronJob("heartbeat-audit", "heartbeat-audit", 90.0, "heartbeat audit: use a tool to read heartbeats"),
)


@dataclass
class _JobState:
    job: CronJob
    next_run_ms: int
    last_run_ms: int | None = None
    last_status: str | None = None
    last_duration_ms: int | None = None
    running: bool = False
    runs: int = 0


class SimulatedCron:
    """`run_turn(run_id, session_key, agent_id, text, model)` runs one job's agent turn; `spawn` starts a
    background task the runtime owns; `broadcast(event, payload)` reaches every client."""

    def __init__(self, jobs: tuple[CronJob, ...], *, started_ms: int, broadcast: Callable[[str, dict[str, Any]], None],
                 spawn: Callable[[Any], asyncio.Task[Any]],
                 run_turn: Callable[[str, str, str, str, str | None], Awaitable[dict[str, Any]]],
                 store_path: str) -> None:
        self.jobs = {job.id: _JobState(job, started_ms + int(job.every_s * 1000)) for job in jobs}
        self.broadcast = broadcast
        self.run_turn = run_turn
        self.store_path = store_path
        self._spawn = spawn
        self._runs: list[dict[str, Any]] = []

    def job_list(self) -> dict[str, Any]:
        return {"jobs": [self._job(s) for s in self.jobs.values()]}

    def status(self) -> dict[str, Any]:
        next_wake = min((s.next_run_ms for s in self.jobs.values()), default=None)
        return {"enabled": True, "jobs": len(self.jobs), "nextWakeAtMs": next_wake, "storePath": self.store_path}

    def runs(self, job_id: Any) -> dict[str, Any]:
        return {"entries": [e for e in self._runs if job_id is None or e["jobId"] == job_id][-50:]}

    def start_run(self, job_id: str, trigger: str) -> bool:
        """Start a run of `job_id` now unless one is going; whether it started."""
        state = self.jobs[job_id]
        if state.running:
            return False
        self._spawn(self._run_job(state, trigger))
        return True

    async def run(self, job_id: str, trigger: str = "manual") -> None:
        """One run of `job_id`, awaited (tests)."""
        await self._run_job(self.jobs[job_id], trigger)

    @staticmethod
    def _job(state: _JobState) -> dict[str, Any]:
        job = state.job
        return {"id": job.id, "name": job.name, "enabled": True,
                "schedule": {"kind": "every", "everyMs": int(job.every_s * 1000)},
                "sessionTarget": "isolated", "payload": {"kind": "agentTurn", "message": job.message},
                "state": {"nextRunAtMs": state.next_run_ms, "lastRunAtMs": state.last_run_ms,
                          "lastStatus": state.last_status, "lastDurationMs": state.last_duration_ms,
                          "running": state.running}}

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = now_ms()
            for state in self.jobs.values():
                if not state.running and now >= state.next_run_ms:
                    self._spawn(self._run_job(state, "schedule"))

    async def _run_job(self, state: _JobState, trigger: str) -> None:
        job = state.job
        state.running = True
        run_at = now_ms()
        state.next_run_ms = run_at + int(job.every_s * 1000)
        self.broadcast("cron", {"jobId": job.id, "jobName": job.name, "action": "started", "runAtMs": run_at,
                                "trigger": trigger, "ts": run_at})
        # A controlled share of failing runs: every fourth run of each job meets a failing model.
        state.runs += 1
        flaky = state.runs % 4 == 0
        result = await self.run_turn(str(uuid.uuid4()), f"cron:{job.id}", "main",
                                     job.message + (" fail the model" if flaky else ""), None)
        ended = now_ms()
        status = "ok" if result.get("ok") else "error"
        state.running = False
        state.last_run_ms, state.last_status, state.last_duration_ms = run_at, status, ended - run_at
        entry: dict[str, Any] = {"ts": ended, "jobId": job.id, "jobName": job.name, "action": "finished",
                                 "status": status, "runAtMs": run_at, "durationMs": ended - run_at,
                                 "nextRunAtMs": state.next_run_ms, "sessionKey": f"cron:{job.id}",
                                 "trigger": trigger, "summary": "completed" if status == "ok" else "failed"}
        if status == "error":
            entry["error"] = str(result.get("error"))
        self._runs.append(entry)
        del self._runs[:-200]
        self.broadcast("cron", entry)

"""OpenClaw state rows -> telemetry: one reader per family (automation runs and the agent runs they
started, task and flow runs, model usage).

Part of the OpenClaw state collection point (see `clawdbot_otel.collect.openclaw_state`).
"""


from __future__ import annotations

import re
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from clawdbot_otel import SpanHandle, Telemetry, model_family

from ._openclaw_db import Ledger
from .scheduler import SchedulerInstrumentation
from .tasks import TaskInstrumentation

__all__ = ["AgentRunIndex", "AutomationRuns", "ModelUsage", "TaskRuns"]

_ERROR_TEXT_MAX = 512
_MAX_AGENT_RUNS = 1000
_CRON_SESSION = re.compile(r"agent:[^:]+:cron:(?P<job>[^:]+)")
_TIMEOUT_TEXT = re.compile(r"time(d)?[ _-]?out", re.IGNORECASE)
_MODEL_TEXT = re.compile(r"\b(model|provider)\b", re.IGNORECASE)
# OpenClaw task statuses -> the catalogue's status label (anything else folds into `other`).
_TASK_STATUS = {"succeeded": "success", "failed": "failure", "timed_out": "timeout", "cancelled": "cancelled",
                "lost": "lost"}
_FLOW_TERMINAL = ("succeeded", "failed", "timed_out", "cancelled", "lost")



@dataclass(frozen=True, slots=True)
class _Receipt:
    """A finished row of `cron_run_receipts` (the columns in the order they are selected)."""

    receipt_id: str
    job_id: str
    request_run_id: str | None
    status: str
    started_ms: int
    finished_ms: int
    error_text: str | None


@dataclass(slots=True)
class _AgentRun:
    """An agent run an automation started, from its trajectory events."""

    run_id: str
    job_id: str
    session_key: str
    started_ms: int
    ended_ms: int | None = None
    status: str | None = None
    model: str | None = None
    provider: str | None = None
    usage: dict[str, Any] | None = None


def _usage(usage_json: str | None) -> dict[str, Any] | None:
    """`data.usage` of a model.completed event ({input, output, cacheRead, cacheWrite, cost: {total}})."""
    try:
        usage = orjson.loads(usage_json) if usage_json else None
    except orjson.JSONDecodeError:
        return None
    return usage if isinstance(usage, dict) else None


def _status_of_receipt(status: str, error_text: str | None) -> tuple[str, str | None]:
    """(catalogue status, error_type) of a finished cron run receipt."""
    if status == "ok":
        return "success", None
    if status in ("error", "interrupted"):
        if error_text and _TIMEOUT_TEXT.search(error_text):
            return "timeout", "timeout"
        if error_text and _MODEL_TEXT.search(error_text):
            return "failure", "model"
        return "failure", "runtime"
    return "other", None  # skipped, superseded: not a run that did work


class AgentRunIndex:
    """The agent runs automations started (session key `agent:<id>:cron:<job id>:run:...`), from an agent
    database's trajectory events, kept until their automation run is reported. In memory only: after a
    restart a run already read is not linked to its job span (the job span itself is reported)."""

    __slots__ = ("_rowids", "_runs")

    def __init__(self) -> None:
        self._rowids: dict[str, int] = {}  # agent database -> last rowid read
        self._runs: OrderedDict[str, _AgentRun] = OrderedDict()

    def read(self, conn: sqlite3.Connection, key: str) -> None:
        rows = conn.execute(
            "SELECT rowid, run_id, created_at, json_extract(event_json, '$.type'), "
            "json_extract(event_json, '$.sessionKey'), json_extract(event_json, '$.modelId'), "
            "json_extract(event_json, '$.provider'), json_extract(event_json, '$.data.status'), "
            "json_extract(event_json, '$.data.usage') FROM trajectory_runtime_events WHERE rowid > ? AND "
            "json_extract(event_json, '$.type') IN ('session.started', 'session.ended', 'model.completed') "
            "AND json_extract(event_json, '$.sessionKey') LIKE 'agent:%:cron:%' ORDER BY rowid",
            (self._rowids.get(key, 0),))
        for rowid, run_id, created_ms, kind, session_key, model, provider, status, usage_json in rows:
            self._rowids[key] = rowid
            match = _CRON_SESSION.match(session_key or "")
            if match is None or not run_id:
                continue
            run = self._runs.get(run_id)
            if run is None:
                run = self._runs[run_id] = _AgentRun(run_id, match["job"], session_key, created_ms)
                while len(self._runs) > _MAX_AGENT_RUNS:
                    self._runs.popitem(last=False)
            run.model = run.model or model
            run.provider = run.provider or provider
            if kind == "session.ended":
                run.ended_ms, run.status = created_ms, status
            elif kind == "model.completed":
                run.usage = _usage(usage_json) or run.usage

    def take(self, receipt: _Receipt) -> list[_AgentRun]:
        """The runs the automation run of `receipt` started (forgotten here once taken)."""
        taken = [run for run in self._runs.values() if run.job_id == receipt.job_id
                 and receipt.started_ms <= run.started_ms <= receipt.finished_ms]
        for run in taken:
            del self._runs[run.run_id]
        return taken


class AutomationRuns:
    """`cron_jobs` and `cron_run_receipts`: the scheduler_* metrics and one `job` span per finished run, with
    the agent run it started as a `session` span under it."""

    __slots__ = ("_active", "_agent_runs", "_ledger", "_scheduled", "_scheduler", "count", "telemetry")

    def __init__(self, telemetry: Telemetry, ledger: Ledger, agent_runs: AgentRunIndex,
                 now: Callable[[], float]) -> None:
        self.telemetry = telemetry
        self._ledger = ledger
        self._agent_runs = agent_runs
        self._scheduler = SchedulerInstrumentation(telemetry, now=now)  # the next-run gauge
        self._scheduled: set[str] = set()  # job names with a next run reported
        self._active = 0  # runs reported in scheduler_jobs_active
        self.count = 0

    def read(self, conn: sqlite3.Connection) -> bool:
        names = self._read_jobs(conn)
        running = conn.execute("SELECT count(*) FROM cron_run_receipts WHERE status = 'running'").fetchone()[0]
        self._set_active(running)
        rows = conn.execute(
            "SELECT receipt_id, job_id, request_run_id, status, started_at_ms, finished_at_ms, error_text "
            "FROM cron_run_receipts WHERE status != 'running' AND finished_at_ms >= ? "
            "ORDER BY finished_at_ms, receipt_id", (self._ledger.since_ms,))
        changed = False
        for row in rows:
            receipt = _Receipt(*row)
            if self._ledger.fresh(receipt.receipt_id):
                self._report(names.get(receipt.job_id, receipt.job_id), receipt)
                self._ledger.add(receipt.receipt_id, receipt.finished_ms)
                self.count += 1
                changed = True
        return changed

    def close(self) -> None:
        """Stop the next-run gauge; take back the runs counted as active."""
        self._scheduler.close()
        self._set_active(0)

    def _set_active(self, running: int) -> None:
        if running != self._active:
            self.telemetry.increment("scheduler_jobs_active", None, running - self._active)
            self._active = running

    def _read_jobs(self, conn: sqlite3.Connection) -> dict[str, str]:
        names: dict[str, str] = {}
        scheduled: set[str] = set()
        rows = conn.execute("SELECT job_id, name, enabled, json_extract(state_json, '$.nextRunAtMs') FROM cron_jobs")
        for job_id, name, enabled, next_ms in rows:
            names[job_id] = name
            if enabled and isinstance(next_ms, int | float):
                self._scheduler.set_next_run(name, next_ms / 1000.0)
                scheduled.add(name)
        for name in self._scheduled - scheduled:
            self._scheduler.set_next_run(name, None)  # disabled or removed: no countdown
        self._scheduled = scheduled
        return names

    def _report(self, name: str, receipt: _Receipt) -> None:
        """One job span with the run's own start and end, and its scheduler_* counts."""
        telemetry = self.telemetry
        job_id, request_run_id, status = receipt.job_id, receipt.request_run_id, receipt.status
        started_ms, finished_ms, error_text = receipt.started_ms, receipt.finished_ms, receipt.error_text
        label, error_type = _status_of_receipt(status, error_text)
        trigger = "manual" if (request_run_id or "").startswith("manual:") else "schedule"
        error = telemetry.redactor.text(error_text)[:_ERROR_TEXT_MAX] if error_text else None
        handle = telemetry.job_span(name, job_id=job_id, trigger=trigger, start_time=started_ms * 1_000_000).start()
        next_run_s = self._scheduler.seconds_to_next_run(name)
        if next_run_s is not None:
            handle.set("clawdbot.job.next_run_s", next_run_s)
        if label == "success":
            handle.set_status("success")
        elif label == "other":
            handle.set("clawdbot.status", status)
        else:
            handle.set_status(label, error or status, error_type)
        for run in self._agent_runs.take(receipt):
            self._report_agent_run(handle, run, receipt.finished_ms)
        handle.end(finished_ms * 1_000_000)
        telemetry.increment("scheduler_jobs_total", {"job_name": name, "status": label})
        telemetry.histogram("scheduler_job_latency_seconds", max(0, finished_ms - started_ms) / 1000.0,
                            {"job_name": name})
        if error_type is not None:
            telemetry.increment("scheduler_job_errors_total", {"job_name": name, "error_type": error_type})
        level = "INFO" if label in ("success", "other") else "ERROR"
        telemetry.log(level, "scheduler", f"Job {label}", span=handle, duration_ms=finished_ms - started_ms,
                      metadata={
                          "job_name": name, "job_id": job_id, "trigger": trigger, "status": label,
                          "openclaw_status": status, "run_id": request_run_id, "error": error,
                          "started_at_ms": started_ms, "finished_at_ms": finished_ms})

    def _report_agent_run(self, job: SpanHandle, run: _AgentRun, job_finished_ms: int) -> None:
        session = self.telemetry.session_span(
            run.session_key.split(":")[1], model=run.model, provider=run.provider, session_key=run.session_key,
            run_id=run.run_id, parent=job, start_time=run.started_ms * 1_000_000).start()
        usage = run.usage or {}
        for attribute, field in (("gen_ai.usage.input_tokens", "input"), ("gen_ai.usage.output_tokens", "output"),
                                 ("gen_ai.usage.cache_read.input_tokens", "cacheRead"),
                                 ("gen_ai.usage.cache_creation.input_tokens", "cacheWrite")):
            if isinstance(usage.get(field), int):
                session.set(attribute, usage[field])
        end_ms = run.ended_ms if run.ended_ms is not None else job_finished_ms
        session.set("clawdbot.session.duration_s", (end_ms - run.started_ms) / 1000.0)
        if run.status in (None, "success"):
            session.set_status("success")
        else:
            session.set_status("failure", f"agent run {run.status}", "model")
        session.end(end_ms * 1_000_000)


class TaskRuns:
    """`task_runs` and `flow_runs` (terminal rows): the task_* metrics, phase = OpenClaw's runtime or `flow`."""

    __slots__ = ("_flows", "_instrumentation", "_tasks", "count")

    def __init__(self, telemetry: Telemetry, tasks: Ledger, flows: Ledger, now: Callable[[], float]) -> None:
        self._instrumentation = TaskInstrumentation(telemetry, now=now)
        self._tasks = tasks
        self._flows = flows
        self.count = 0

    def read(self, conn: sqlite3.Connection) -> bool:
        tasks = conn.execute(
            "SELECT task_id, status, coalesce(runtime, 'other'), created_at, started_at, ended_at FROM task_runs "
            "WHERE ended_at IS NOT NULL AND ended_at >= ? AND status IN "
            "('succeeded', 'failed', 'timed_out', 'cancelled', 'lost') ORDER BY ended_at, task_id",
            (self._tasks.since_ms,))
        changed = self._complete(tasks, self._tasks)
        marks = ", ".join("?" for _ in _FLOW_TERMINAL)
        flows = conn.execute(
            f"SELECT flow_id, status, 'flow', created_at, NULL, ended_at FROM flow_runs WHERE ended_at IS NOT NULL "
            f"AND ended_at >= ? AND status IN ({marks}) ORDER BY ended_at, flow_id",
            (self._flows.since_ms, *_FLOW_TERMINAL))
        return self._complete(flows, self._flows) or changed

    def close(self) -> None:
        self._instrumentation.close()

    def _complete(self, rows: Iterable[tuple[Any, ...]], ledger: Ledger) -> bool:
        changed = False
        for row_id, status, phase, created_ms, started_ms, ended_ms in rows:
            if not ledger.fresh(row_id):
                continue
            duration_s = (ended_ms - started_ms) / 1000.0 if started_ms is not None else None
            self._instrumentation.complete(row_id, _TASK_STATUS.get(status, status), phase,
                                           duration_s=duration_s, latency_s=(ended_ms - created_ms) / 1000.0)
            ledger.add(row_id, ended_ms)
            self.count += 1
            changed = True
        return changed


class ModelUsage:
    """`model.completed` trajectory events: session_tokens_used and session_cost_usd_total per model, for the
    runs the proxy did not report (see the module docstring for the rule)."""

    __slots__ = ("_rowids", "count", "now", "proxy_counted", "settle_s", "telemetry")

    def __init__(self, telemetry: Telemetry, rowids: dict[str, int], proxy_counted: Callable[[str], bool] | None,
                 settle_s: float, now: Callable[[], float]) -> None:
        self.telemetry = telemetry
        self._rowids = rowids  # agent database -> last rowid reported (the checkpoint's)
        self.proxy_counted = proxy_counted
        self.settle_s = settle_s
        self.now = now
        self.count = 0

    def read(self, conn: sqlite3.Connection, key: str) -> bool:
        after = self._rowids.get(key, 0)
        settled_ms = int((self.now() - self.settle_s) * 1000)
        rows = conn.execute(
            "SELECT rowid, run_id, created_at, json_extract(event_json, '$.modelId'), "
            "json_extract(event_json, '$.data.usage') FROM trajectory_runtime_events "
            "WHERE rowid > ? AND json_extract(event_json, '$.type') = 'model.completed' ORDER BY rowid", (after,))
        last = after
        for rowid, run_id, created_ms, model, usage_json in rows:
            if created_ms > settled_ms:
                break  # the proxy may not have had this run's final response yet: next poll
            last = rowid
            if run_id and self.proxy_counted is not None and self.proxy_counted(run_id):
                continue
            self._report(model, _usage(usage_json))
            self.count += 1
        if last == after:
            return False
        self._rowids[key] = last
        return True

    def _report(self, model: str | None, usage: dict[str, Any] | None) -> None:
        if usage is None:
            return
        family = model_family(model)
        for token_type, key in (("input", "input"), ("output", "output"), ("cache_read", "cacheRead"),
                                ("cache_write", "cacheWrite")):
            count = usage.get(key)
            if isinstance(count, int | float) and count > 0:
                self.telemetry.increment("session_tokens_used", {"model": family, "token_type": token_type}, count)
        cost = usage.get("cost")
        total = cost.get("total") if isinstance(cost, dict) else None
        if isinstance(total, int | float) and total > 0:
            self.telemetry.increment("session_cost_usd_total", {"model": family}, total)

"""OpenClaw state collection point: the real gateway's automations, tasks and model usage, read from its
SQLite databases, whether or not a client is connected to our proxy.

    from clawdbot_otel.collect import OpenClawStateWatcher

    watcher = OpenClawStateWatcher(telemetry)          # ~/.openclaw, or $OPENCLAW_STATE_DIR
    watcher.start()                                    # polls every 15 s; await watcher.stop()

What is read (OpenClaw 2026.9.x, state schema 18, agent schema 23):

- `state/openclaw.sqlite`: `cron_jobs` (name, enabled, `state_json.nextRunAtMs` only: never `job_json`,
  which holds the prompt), `cron_run_receipts` (the run ledger: started/finished ms, status, error text),
  `task_runs` and `flow_runs` (terminal status and times; never the task text or summaries).
- `agents/<id>/agent/openclaw-agent.sqlite`: `trajectory_runtime_events` of type `model.completed`, and
  of those only the model, provider, run id and `data.usage` (extracted in SQL: message content never
  leaves the database). The auth-profile tables of that database are never touched.

How: each database is opened with a `file:...?mode=ro` URI, `PRAGMA query_only`, and no busy wait
(timeout 0); a poll's reads of it run in one short deferred transaction (one consistent WAL snapshot),
ended before the next database is read. Between polls the connection stays open with no transaction
(no lock), so the schema is not parsed again at every poll. A busy or locked database is counted
(`clawdbot_otel_source_errors_total{source="openclaw_state", reason="busy"}`) and read at the next
poll. A database whose `PRAGMA user_version` is newer than the versions this module knows is refused
(reason `schema_unknown`, one ERROR log per database and version), as is one without the expected
tables or columns (`schema_mismatch`): nothing is guessed from an unknown shape.

What was reported is remembered in a checkpoint file under the clawdbot-otel state folder (one per
OpenClaw state folder), written after every poll that reported something, so a restart neither loses
nor repeats a run. Finished runs are found by their finish time with a look-back window (a run that
committed late is still seen) and a set of the ids reported inside that window; model usage by rowid.

Model usage and the proxy (the rule): a run's tokens and cost are the proxy's when the proxy reported
them (`proxy_counted(run_id)` is true: the proxy saw the run's final response). Every other run (cron,
channels, sub-agents, clients that bypass the proxy, a proxy restarted mid-run) is counted here, once,
after `usage_settle_s` so the proxy has had the run's final response first. Without a proxy in the same
process (`clawdbot-otel watch-openclaw`) every run is counted here: do not also run a proxy then.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from clawdbot_otel import SpanHandle, Telemetry, model_family
from clawdbot_otel.paths import state_dir as clawdbot_state_dir

from ._polling import PollingWatcher
from .scheduler import SchedulerInstrumentation
from .tasks import TaskInstrumentation

__all__ = [
    "KNOWN_AGENT_SCHEMAS",
    "KNOWN_STATE_SCHEMAS",
    "OpenClawStateWatcher",
    "openclaw_state_dir",
]

#: `PRAGMA user_version` values whose tables this module was written against (2026.9.6: 18 and 23).
#: Older versions are read when the tables and columns below exist; newer ones are refused.
KNOWN_STATE_SCHEMAS = range(13, 19)
KNOWN_AGENT_SCHEMAS = range(20, 24)

_STATE_DB = Path("state") / "openclaw.sqlite"
_AGENT_DB = "openclaw-agent.sqlite"
_NEEDED_STATE: Mapping[str, tuple[str, ...]] = {
    "cron_jobs": ("job_id", "name", "enabled", "state_json"),
    "cron_run_receipts": ("receipt_id", "job_id", "request_run_id", "status", "started_at_ms", "finished_at_ms",
                          "error_text"),
    "task_runs": ("task_id", "runtime", "status", "created_at", "started_at", "ended_at"),
    "flow_runs": ("flow_id", "status", "created_at", "ended_at"),
}
_NEEDED_AGENT: Mapping[str, tuple[str, ...]] = {
    "trajectory_runtime_events": ("session_id", "run_id", "event_json", "created_at"),
}
#: A run that finished this long before the newest one seen is still looked for (late commits).
LOOKBACK_MS = 2 * 60 * 1000
_ERROR_TEXT_MAX = 512
_MAX_AGENT_RUNS = 1000
_CRON_SESSION = re.compile(r"agent:[^:]+:cron:(?P<job>[^:]+)")
_TIMEOUT_TEXT = re.compile(r"time(d)?[ _-]?out", re.IGNORECASE)
_MODEL_TEXT = re.compile(r"\b(model|provider)\b", re.IGNORECASE)
# OpenClaw task statuses -> the catalogue's status label (anything else folds into `other`).
_TASK_STATUS = {"succeeded": "success", "failed": "failure", "timed_out": "timeout", "cancelled": "cancelled",
                "lost": "lost"}
_FLOW_TERMINAL = ("succeeded", "failed", "timed_out", "cancelled", "lost")


def openclaw_state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The OpenClaw state folder: `explicit`, else `$OPENCLAW_STATE_DIR`, else `~/.openclaw`."""
    chosen = explicit or os.environ.get("OPENCLAW_STATE_DIR") or Path.home() / ".openclaw"
    return Path(chosen).expanduser()


class _Busy(Exception):
    """The database is locked or busy right now: try again at the next poll."""


class _Refused(Exception):
    """A schema this module does not know: (reason, detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Database:
    """One of OpenClaw's databases, read-only. The connection stays open between polls (no transaction, so
    no lock: in WAL mode an idle reader holds nothing) so that SQLite does not parse the ~100-table schema
    again at every poll; a file replaced under the same path (restore, quarantine) is reopened."""

    __slots__ = ("_conn", "_identity", "_schema_cookie", "known", "needed", "path")

    def __init__(self, path: Path, known: range, needed: Mapping[str, tuple[str, ...]]) -> None:
        self.path = path
        self.known = known
        self.needed = needed
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._schema_cookie: int | None = None  # PRAGMA schema_version last validated

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one deferred transaction (one WAL snapshot), ended on leaving; the schema is
        checked first. Never waits for a lock: busy or locked raises `_Busy`."""
        stat = self.path.stat()
        if self._conn is None or self._identity != (stat.st_dev, stat.st_ino):
            self.close()
            try:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=0,
                                             isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise _busy_or(exc) from exc
            self._identity = (stat.st_dev, stat.st_ino)
        conn = self._conn
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.execute("BEGIN")
            cookie = int(conn.execute("PRAGMA schema_version").fetchone()[0])
            if cookie != self._schema_cookie:
                _check_schema(conn, self.known, self.needed)
                self._schema_cookie = cookie
            yield conn
        except sqlite3.OperationalError as exc:
            raise _busy_or(exc) from exc
        finally:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._schema_cookie = None


def _busy_or(exc: sqlite3.OperationalError) -> Exception:
    text = str(exc).lower()
    return _Busy(str(exc)) if "locked" in text or "busy" in text else exc


def _check_schema(conn: sqlite3.Connection, known: range, needed: Mapping[str, tuple[str, ...]]) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > known.stop - 1:
        raise _Refused("schema_unknown", f"schema version {version} is newer than the versions this "
                       f"clawdbot-otel knows ({known.start}..{known.stop - 1}); upgrade clawdbot-otel")
    for table, columns in needed.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in columns if c not in have]
        if missing:
            what = f"table {table}" if not have else f"columns {', '.join(missing)} of {table}"
            raise _Refused("schema_mismatch", f"schema version {version} has no {what}")
    return version


class _Ledger:
    """Finished rows already reported: a high-water finish time plus the ids inside the look-back window."""

    __slots__ = ("hwm_ms", "ids")

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.hwm_ms = int(data.get("hwm_ms", 0))
        self.ids: dict[str, int] = {str(k): int(v) for k, v in dict(data.get("ids", {})).items()}

    @property
    def since_ms(self) -> int:
        return max(0, self.hwm_ms - LOOKBACK_MS)

    def fresh(self, row_id: str) -> bool:
        return row_id not in self.ids

    def add(self, row_id: str, finished_ms: int) -> None:
        self.ids[row_id] = finished_ms
        self.hwm_ms = max(self.hwm_ms, finished_ms)

    def prune(self) -> None:
        cutoff = self.since_ms
        self.ids = {k: v for k, v in self.ids.items() if v >= cutoff}

    def dump(self) -> dict[str, Any]:
        return {"hwm_ms": self.hwm_ms, "ids": self.ids}


@dataclass
class _Checkpoint:
    """What was reported, per database; persisted as JSON (atomic replace)."""

    path: Path
    receipts: _Ledger
    tasks: _Ledger
    flows: _Ledger
    usage_rowids: dict[str, int]
    damaged: str | None = None
    """Why the file on disk could not be used (then everything still in OpenClaw's tables is reported again)."""

    @classmethod
    def load(cls, path: Path) -> _Checkpoint:
        damaged = None
        try:
            data = orjson.loads(path.read_bytes())
            fresh = cls(path, _Ledger(data.get("receipts")), _Ledger(data.get("tasks")), _Ledger(data.get("flows")),
                        {str(k): int(v) for k, v in dict(data.get("usage_rowids", {})).items()})
        except FileNotFoundError:
            fresh = None
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable, not JSON, wrong shape
            fresh, damaged = None, f"{type(exc).__name__}: {exc}"
        if fresh is None:
            fresh = cls(path, _Ledger(), _Ledger(), _Ledger(), {}, damaged)
        return fresh

    def save(self) -> None:
        for ledger in (self.receipts, self.tasks, self.flows):
            ledger.prune()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({
            "receipts": self.receipts.dump(), "tasks": self.tasks.dump(), "flows": self.flows.dump(),
            "usage_rowids": self.usage_rowids,
        }))
        os.replace(tmp, self.path)


def _default_checkpoint(openclaw_dir: Path) -> Path:
    """One checkpoint per OpenClaw state folder, under clawdbot-otel's own state folder."""
    key = hashlib.sha256(str(openclaw_dir.resolve()).encode()).hexdigest()[:16]
    return clawdbot_state_dir() / "openclaw-state" / f"{key}.json"


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


class _AgentRunIndex:
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


class _AutomationRuns:
    """`cron_jobs` and `cron_run_receipts`: the scheduler_* metrics and one `job` span per finished run, with
    the agent run it started as a `session` span under it."""

    __slots__ = ("_active", "_agent_runs", "_ledger", "_scheduled", "_scheduler", "count", "telemetry")

    def __init__(self, telemetry: Telemetry, ledger: _Ledger, agent_runs: _AgentRunIndex,
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


class _TaskRuns:
    """`task_runs` and `flow_runs` (terminal rows): the task_* metrics, phase = OpenClaw's runtime or `flow`."""

    __slots__ = ("_flows", "_instrumentation", "_tasks", "count")

    def __init__(self, telemetry: Telemetry, tasks: _Ledger, flows: _Ledger, now: Callable[[], float]) -> None:
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

    def _complete(self, rows: Iterable[tuple[Any, ...]], ledger: _Ledger) -> bool:
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


class _ModelUsage:
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


class OpenClawStateWatcher(PollingWatcher):
    """Polls OpenClaw's state databases (see the module docstring). `scan_once()` never raises.

    A dispatcher: it owns the database connections, the schema checks and the checkpoint; one reader per
    family turns rows into telemetry (automation runs, task and flow runs, model usage).
    """

    __slots__ = ("_agent_runs", "_automations", "_checkpoint", "_databases", "_refused", "_tasks", "_usage",
                 "cpu_s_last_poll", "cpu_s_max_poll", "openclaw_dir", "polls")

    source = "openclaw_state"
    component = "scheduler"

    def __init__(
        self,
        telemetry: Telemetry,
        openclaw_dir: str | os.PathLike[str] | None = None,
        *,
        interval_s: float = 15.0,
        checkpoint: str | os.PathLike[str] | None = None,
        proxy_counted: Callable[[str], bool] | None = None,
        usage_settle_s: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(telemetry, interval_s=interval_s)
        self.openclaw_dir = openclaw_state_dir(openclaw_dir)
        self._checkpoint = _Checkpoint.load(Path(checkpoint) if checkpoint else _default_checkpoint(self.openclaw_dir))
        if self._checkpoint.damaged:  # said, and counted: the runs still in OpenClaw's tables are reported again
            self._errors.report("checkpoint_damaged", str(self._checkpoint.path),
                                f"{self._checkpoint.damaged}; starting over", level="ERROR")
        self._agent_runs = _AgentRunIndex()
        self._automations = _AutomationRuns(telemetry, self._checkpoint.receipts, self._agent_runs, now)
        self._tasks = _TaskRuns(telemetry, self._checkpoint.tasks, self._checkpoint.flows, now)
        self._usage = _ModelUsage(telemetry, self._checkpoint.usage_rowids, proxy_counted, usage_settle_s, now)
        self._databases: dict[str, _Database] = {}
        self._refused: dict[str, str] = {}  # db path -> the refusal already logged
        self.polls = 0
        self.cpu_s_last_poll = 0.0
        self.cpu_s_max_poll = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """What this watcher reported since it was made: automation runs, tasks (and flows), model-usage runs."""
        return {"runs": self._automations.count, "tasks": self._tasks.count, "usage": self._usage.count}

    @property
    def state_db(self) -> Path:
        return self.openclaw_dir / _STATE_DB

    def agent_dbs(self) -> list[Path]:
        return sorted((self.openclaw_dir / "agents").glob(f"*/agent/{_AGENT_DB}"))

    def close(self) -> None:
        """Stop reporting gauges, take back the runs it counted as active, close the database connections."""
        super().close()
        self._automations.close()
        self._tasks.close()
        for database in self._databases.values():
            database.close()
        self._databases.clear()

    # --- one poll ---------------------------------------------------------------------------------
    def _scan(self) -> None:
        cpu0 = time.thread_time()
        changed = False
        try:
            # Agent databases first: an automation's agent run is known before its receipt is reported.
            for db in self.agent_dbs():
                changed |= self._read(db, KNOWN_AGENT_SCHEMAS, _NEEDED_AGENT, self._read_agent)
            changed |= self._read(self.state_db, KNOWN_STATE_SCHEMAS, _NEEDED_STATE, self._read_state)
            if changed:
                self._checkpoint.save()
        finally:
            self.polls += 1
            self.cpu_s_last_poll = time.thread_time() - cpu0
            self.cpu_s_max_poll = max(self.cpu_s_max_poll, self.cpu_s_last_poll)

    def _read_state(self, conn: sqlite3.Connection, _key: str) -> bool:
        changed = self._automations.read(conn)
        return self._tasks.read(conn) or changed

    def _read_agent(self, conn: sqlite3.Connection, key: str) -> bool:
        self._agent_runs.read(conn, key)
        return self._usage.read(conn, key)

    def _read(self, db: Path, known: range, needed: Mapping[str, tuple[str, ...]],
              read: Callable[[sqlite3.Connection, str], bool]) -> bool:
        key = str(db)
        if not db.is_file():
            if self._refused.get(key) != "missing":
                self._refused[key] = "missing"
                self._errors.note(f"Waiting for OpenClaw database {db} to be created", key)
            database = self._databases.pop(key, None)
            if database is not None:
                database.close()
            return False
        database = self._databases.get(key)
        if database is None:
            database = self._databases[key] = _Database(db, known, needed)
        try:
            with database.snapshot() as conn:
                changed = read(conn, key)
        except _Busy as exc:
            self._errors.report("busy", key, f"{exc}; read again at the next poll", level="DEBUG")
            return False
        except _Refused as exc:
            if self._refused.get(key) != str(exc):  # counted and logged once per database and version
                self._refused[key] = str(exc)
                self._errors.report(exc.reason, key, f"{exc}; its tables are not read", level="ERROR")
            return False
        except (sqlite3.DatabaseError, OSError) as exc:
            database.close()  # reopened at the next poll
            self._errors.report("unreadable", key, f"{type(exc).__name__}: {exc}")
            return False
        self._refused.pop(key, None)
        return changed

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

import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from clawdbot_otel import Telemetry

from ._openclaw_db import (
    AGENT_DB,
    KNOWN_AGENT_SCHEMAS,
    KNOWN_STATE_SCHEMAS,
    NEEDED_AGENT,
    NEEDED_STATE,
    STATE_DB,
    Busy,
    Checkpoint,
    Database,
    Refused,
    default_checkpoint,
    openclaw_state_dir,
)
from ._openclaw_readers import AgentRunIndex, AutomationRuns, ModelUsage, TaskRuns
from ._polling import PollingWatcher

__all__ = [
    "KNOWN_AGENT_SCHEMAS",
    "KNOWN_STATE_SCHEMAS",
    "OpenClawStateWatcher",
    "openclaw_state_dir",
]



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
        self._checkpoint = Checkpoint.load(Path(checkpoint) if checkpoint else default_checkpoint(self.openclaw_dir))
        if self._checkpoint.damaged:  # said, and counted: the runs still in OpenClaw's tables are reported again
            self._errors.report("checkpoint_damaged", str(self._checkpoint.path),
                                f"{self._checkpoint.damaged}; starting over", level="ERROR")
        self._agent_runs = AgentRunIndex()
        self._automations = AutomationRuns(telemetry, self._checkpoint.receipts, self._agent_runs, now)
        self._tasks = TaskRuns(telemetry, self._checkpoint.tasks, self._checkpoint.flows, now)
        self._usage = ModelUsage(telemetry, self._checkpoint.usage_rowids, proxy_counted, usage_settle_s, now)
        self._databases: dict[str, Database] = {}
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
        return self.openclaw_dir / STATE_DB

    def agent_dbs(self) -> list[Path]:
        return sorted((self.openclaw_dir / "agents").glob(f"*/agent/{AGENT_DB}"))

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
                changed |= self._read(db, KNOWN_AGENT_SCHEMAS, NEEDED_AGENT, self._read_agent)
            changed |= self._read(self.state_db, KNOWN_STATE_SCHEMAS, NEEDED_STATE, self._read_state)
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
            database = self._databases[key] = Database(db, known, needed)
        try:
            with database.snapshot() as conn:
                changed = read(conn, key)
        except Busy as exc:
            self._errors.report("busy", key, f"{exc}; read again at the next poll", level="DEBUG")
            return False
        except Refused as exc:
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

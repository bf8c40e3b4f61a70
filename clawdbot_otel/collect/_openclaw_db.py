"""OpenClaw's databases, read-only: connections, schema checks, and the checkpoint of what was reported.

Part of the OpenClaw state collection point (see `clawdbot_otel.collect.openclaw_state`).
"""


from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from clawdbot_otel.paths import state_dir as clawdbot_state_dir

__all__ = [
    "AGENT_DB",
    "KNOWN_AGENT_SCHEMAS",
    "KNOWN_STATE_SCHEMAS",
    "LOOKBACK_MS",
    "NEEDED_AGENT",
    "NEEDED_STATE",
    "STATE_DB",
    "Busy",
    "Checkpoint",
    "Database",
    "Ledger",
    "Refused",
    "default_checkpoint",
    "openclaw_state_dir",
]

#: `PRAGMA user_version` values whose tables this module was written against (2026.9.6: 18 and 23).
#: Older versions are read when the tables and columns below exist; newer ones are refused.
KNOWN_STATE_SCHEMAS = range(13, 19)
KNOWN_AGENT_SCHEMAS = range(20, 24)

STATE_DB = Path("state") / "openclaw.sqlite"
AGENT_DB = "openclaw-agent.sqlite"
NEEDED_STATE: Mapping[str, tuple[str, ...]] = {
    "cron_jobs": ("job_id", "name", "enabled", "state_json"),
    "cron_run_receipts": ("receipt_id", "job_id", "request_run_id", "status", "started_at_ms", "finished_at_ms",
                          "error_text"),
    "task_runs": ("task_id", "runtime", "status", "created_at", "started_at", "ended_at"),
    "flow_runs": ("flow_id", "status", "created_at", "ended_at"),
}
NEEDED_AGENT: Mapping[str, tuple[str, ...]] = {
    "trajectory_runtime_events": ("session_id", "run_id", "event_json", "created_at"),
}
#: A run that finished this long before the newest one seen is still looked for (late commits).
LOOKBACK_MS = 2 * 60 * 1000


def openclaw_state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The OpenClaw state folder: `explicit`, else `$OPENCLAW_STATE_DIR`, else `~/.openclaw`."""
    chosen = explicit or os.environ.get("OPENCLAW_STATE_DIR") or Path.home() / ".openclaw"
    return Path(chosen).expanduser()


class Busy(Exception):
    """The database is locked or busy right now: try again at the next poll."""


class Refused(Exception):
    """A schema this module does not know: (reason, detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Database:
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
        checked first. Never waits for a lock: busy or locked raises `Busy`."""
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
    return Busy(str(exc)) if "locked" in text or "busy" in text else exc


def _check_schema(conn: sqlite3.Connection, known: range, needed: Mapping[str, tuple[str, ...]]) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > known.stop - 1:
        raise Refused("schema_unknown", f"schema version {version} is newer than the versions this "
                       f"clawdbot-otel knows ({known.start}..{known.stop - 1}); upgrade clawdbot-otel")
    for table, columns in needed.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in columns if c not in have]
        if missing:
            what = f"table {table}" if not have else f"columns {', '.join(missing)} of {table}"
            raise Refused("schema_mismatch", f"schema version {version} has no {what}")
    return version


class Ledger:
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
class Checkpoint:
    """What was reported, per database; persisted as JSON (atomic replace)."""

    path: Path
    receipts: Ledger
    tasks: Ledger
    flows: Ledger
    usage_rowids: dict[str, int]
    damaged: str | None = None
    """Why the file on disk could not be used (then everything still in OpenClaw's tables is reported again)."""

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        damaged = None
        try:
            data = orjson.loads(path.read_bytes())
            fresh = cls(path, Ledger(data.get("receipts")), Ledger(data.get("tasks")), Ledger(data.get("flows")),
                        {str(k): int(v) for k, v in dict(data.get("usage_rowids", {})).items()})
        except FileNotFoundError:
            fresh = None
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable, not JSON, wrong shape
            fresh, damaged = None, f"{type(exc).__name__}: {exc}"
        if fresh is None:
            fresh = cls(path, Ledger(), Ledger(), Ledger(), {}, damaged)
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


def default_checkpoint(openclaw_dir: Path) -> Path:
    """One checkpoint per OpenClaw state folder, under clawdbot-otel's own state folder."""
    key = hashlib.sha256(str(openclaw_dir.resolve()).encode()).hexdigest()[:16]
    return clawdbot_state_dir() / "openclaw-state" / f"{key}.json"

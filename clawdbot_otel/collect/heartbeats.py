"""Task heartbeat collection point: `~/clawd/scheduler/heartbeats/<taskId>.json`.

These heartbeats are task liveness files `{taskId, status, startedAt, lastUpdate, model}` that a
running task rewrites while it works; they are NOT OpenClaw's periodic "heartbeat" agent turn
(that one is a session of type main and shows in the session metrics).

* active: heartbeat files whose status is not finished (`completed`, `failed`, ...); stale ones
  included, so `heartbeat_stale_current / heartbeat_active` is the stale fraction of the
  StaleHeartbeats alert;
* stale: active and `lastUpdate` older than `stale_after_s`. `heartbeat_stale_total` counts each
  heartbeat once when it turns stale, and again only if it recovers (a newer lastUpdate) and goes
  stale again;
* `heartbeat_age_seconds`: one observation per active heartbeat per scan (so prefer a scan interval
  of seconds, not milliseconds); per-task ages are in the logs' `metadata.task_id`.

Logs: created, updated (DEBUG), stale (WARN), recovered, finished, removed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from clawdbot_otel import Telemetry

from ._files import MAX_FILE_BYTES, PARTIAL_GRACE_S, InvalidRecord, JsonFolder, optional_str, parse_timestamp
from ._polling import PollingWatcher

__all__ = ["DEFAULT_HEARTBEATS", "TaskHeartbeat", "TaskHeartbeatWatcher"]

DEFAULT_HEARTBEATS = "~/clawd/scheduler/heartbeats/"

_FINISHED = frozenset({
    "completed", "complete", "done", "finished", "success", "succeeded", "failed", "failure", "error",
    "cancelled", "canceled", "stopped", "aborted", "timeout",
})


class TaskHeartbeat:
    """A parsed heartbeat file."""

    __slots__ = ("last_update", "model", "started_at", "status", "task_id")

    def __init__(self, task_id: str, last_update: float, *, status: str | None = None,
                 started_at: float | None = None, model: str | None = None) -> None:
        self.task_id = task_id
        self.last_update = last_update
        self.status = status
        self.started_at = started_at
        self.model = model

    @property
    def finished(self) -> bool:
        return (self.status or "").strip().lower() in _FINISHED


def _optional_time(data: dict[str, Any], key: str) -> float | None:
    raw = data.get(key)
    if raw is None:
        return None
    value = parse_timestamp(raw)
    if value is None:
        raise InvalidRecord(f"field {key!r} is not an ISO-8601 time / epoch number")
    return value


def _parse_heartbeat(path: str, data: dict[str, Any], st: os.stat_result) -> TaskHeartbeat:
    task_id = optional_str(data, "taskId") or os.path.basename(path)[: -len(".json")]
    # No lastUpdate: the file's mtime is the last time the task wrote it, which is what it means.
    last_update = _optional_time(data, "lastUpdate")
    return TaskHeartbeat(
        task_id, st.st_mtime if last_update is None else last_update, status=optional_str(data, "status"),
        started_at=_optional_time(data, "startedAt"), model=optional_str(data, "model"),
    )


class _State:
    __slots__ = ("finished", "record", "stale")

    def __init__(self, record: TaskHeartbeat) -> None:
        self.record = record
        self.stale = False
        self.finished = False


class TaskHeartbeatWatcher(PollingWatcher):
    """Watches task heartbeat files for liveness; see the module docstring."""

    __slots__ = ("_active", "_now", "_stale", "_states", "folder", "root", "stale_after_s")

    source = "heartbeat"
    component = "heartbeat"

    def __init__(
        self,
        telemetry: Telemetry,
        root: str | os.PathLike[str] | None = None,
        *,
        stale_after_s: float = 300.0,
        interval_s: float = 10.0,
        max_file_bytes: int = MAX_FILE_BYTES,
        partial_grace_s: float = PARTIAL_GRACE_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(telemetry, interval_s=interval_s)
        self.root = os.path.expanduser(os.fspath(root if root is not None else DEFAULT_HEARTBEATS))
        self.stale_after_s = stale_after_s
        self.folder = JsonFolder(self.root, self._errors, _parse_heartbeat, max_bytes=max_file_bytes,
                                 partial_grace_s=partial_grace_s, now=now)
        self._now = now
        self._states: dict[str, _State] = {}
        self._active = 0
        self._stale = 0
        self._gauges.observe("heartbeat_active", self._observe_active)
        self._gauges.observe("heartbeat_stale_current", self._observe_stale)

    @property
    def active(self) -> int:
        return self._active

    @property
    def stale(self) -> int:
        return self._stale

    def _observe_active(self) -> Iterable[tuple[float, None]]:
        yield float(self._active), None

    def _observe_stale(self) -> Iterable[tuple[float, None]]:
        yield float(self._stale), None

    def _log(self, level: str, message: str, record: TaskHeartbeat, **extra: Any) -> None:
        self.telemetry.log(level, self.component, message, metadata={
            "task_id": record.task_id, "status": record.status, "model": record.model, **extra})

    def _scan(self) -> None:
        records = self.folder.scan()
        if records is None:
            return  # the folder cannot be listed: keep what we know
        now = self._now()
        active = stale = 0
        for path, record in records.items():
            state = self._states.get(path)
            if state is None:
                state = self._states[path] = _State(record)
                self._log("DEBUG", "Heartbeat created", record)  # routine: the outcome lines are INFO
            elif state.record is not record:
                if record.last_update != state.record.last_update:
                    self._log("DEBUG", "Heartbeat updated", record)
                state.record = record
            if record.finished:
                if not state.finished:
                    state.finished, state.stale = True, False
                    self._log("DEBUG", "Heartbeat finished", record)
                continue
            state.finished = False
            active += 1
            age_s = max(0.0, now - record.last_update)
            self.telemetry.histogram("heartbeat_age_seconds", age_s)
            if age_s > self.stale_after_s:
                stale += 1
                if not state.stale:
                    state.stale = True
                    self.telemetry.increment("heartbeat_stale_total")
                    self._log("WARN", "Heartbeat stale", record, age_s=round(age_s, 1),
                              stale_after_s=self.stale_after_s)
            elif state.stale:
                state.stale = False
                self._log("INFO", "Heartbeat recovered", record, age_s=round(age_s, 1))
        for path in [p for p in self._states if p not in records]:
            self._log("INFO", "Heartbeat removed", self._states.pop(path).record)
        self._active, self._stale = active, stale

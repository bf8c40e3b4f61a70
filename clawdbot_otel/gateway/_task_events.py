"""Tasks: OpenClaw's `task` events as task completions (and the 24 h completion rate) and the 3-layer
validation results, through the collection point's `TaskInstrumentation`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clawdbot_otel import SpanHandle, Telemetry
from clawdbot_otel.collect import TaskInstrumentation
from clawdbot_otel.conventions import OTHER

from ._observing import LRU, num, source_error

__all__ = ["TaskEvents"]

_TASK_STATUS = {
    "completed": "success", "succeeded": "success", "success": "success", "ok": "success",
    "failed": "failure", "error": "failure", "errored": "failure", "lost": "failure",
    "timed_out": "timeout", "timeout": "timeout",
    "cancelled": OTHER, "canceled": OTHER, "aborted": OTHER,
}


class TaskEvents:
    """`session_of(run_id)` parents a validation span on its run's session, when the run is open.
    `count_completions=False` leaves completions to an `OpenClawStateWatcher` (validations are still read)."""

    def __init__(self, telemetry: Telemetry, tasks: TaskInstrumentation,
                 session_of: Callable[[str], SpanHandle | None], *, count_completions: bool = True) -> None:
        self.telemetry = telemetry
        self.tasks = tasks
        self.session_of = session_of
        self.count_completions = count_completions
        self._seen = LRU(4096)
        self._finished = LRU(4096)

    def event(self, payload: Mapping[str, Any], now: int) -> None:
        task = payload.get("task")
        if not isinstance(task, dict):
            return
        task_id = task.get("taskId") or task.get("id")
        status = _TASK_STATUS.get(str(task.get("status") or ""))
        validations = task.get("validation")
        if isinstance(validations, list) and isinstance(task_id, str):
            for item in validations[:8]:
                if isinstance(item, dict):
                    self._validation(task_id, task, item, now)
        if not self.count_completions or status is None or not isinstance(task_id, str) \
                or not self._finished.add(task_id):
            return
        phase = str(task.get("phase") or task.get("kind") or OTHER)
        ended, started, created = num(task.get("endedAt")), num(task.get("startedAt")), num(task.get("createdAt"))
        duration_s = latency_s = None
        if ended is not None and started is not None and ended >= started:
            duration_s = (ended - started) / 1000
        if ended is not None and created is not None and ended >= created:
            latency_s = (ended - created) / 1000
        self.tasks.complete(task_id, status, phase, duration_s=duration_s, latency_s=latency_s)

    def _validation(self, task_id: str, task: Mapping[str, Any], item: Mapping[str, Any], now: int) -> None:
        layer = item.get("layer")
        if layer not in ("L1", "L2", "L3"):
            source_error(self.telemetry, "validation_shape")
            return
        if not self._seen.add(("validation", task_id, layer, item.get("at"))):
            return
        session = self.session_of(str(task.get("runId") or ""))
        reason = item.get("reason")
        self.tasks.validate(str(layer), item.get("result") in ("pass", "passed", True),
                            reason=str(reason) if reason else None, evidence=item.get("evidence"), task_id=task_id,
                            parent=session)

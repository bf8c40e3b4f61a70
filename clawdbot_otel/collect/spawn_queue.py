"""Spawn queue collection point: `~/clawd/scheduler/spawn-queue/{requests,responses}/*.json`.

A request file `{requestId, requestedBy, requestedAt, spawn: {label, model, task}, waitForResult}`
asks for a sub-agent; the spawner answers with a response file of the same `requestId`
`{requestId, processedAt, status, sessionKey, error}`.

What the watcher counts, once per request id (rescans and a restarted scan loop count nothing twice):

* queue depth: request files without a final response (a response whose status is `pending`,
  `processing`, ... means "picked up": logged, no longer pending, not yet counted);
* on the first final response: `spawn_requests_total{status}` (success, failure, timeout, other),
  the queue latency `processedAt - requestedAt`, and one `spawn` span from requestedAt to processedAt;
* a successful response with a `sessionKey` is a spawned sub-agent: `spawn_subagent_total{model}`,
  and it is active (`spawn_subagent_active{model}`) until its response file is removed (archived)
  or rewritten with a finished status (`completed`, `failed`, `timeout`, ...). A response that is
  already `completed` when first seen counts as a spawned sub-agent that is no longer active.

A response whose request was never seen (the watcher started after the request was removed) is
counted, without latency or span. Request and response state is forgotten when their files are gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from clawdbot_otel import Telemetry, model_family

from ._files import MAX_FILE_BYTES, PARTIAL_GRACE_S, InvalidRecord, JsonFolder, optional_str, parse_timestamp
from ._labels import OTHER
from ._polling import PollingWatcher

__all__ = ["DEFAULT_SPAWN_QUEUE", "SpawnQueueWatcher", "SpawnRequest", "SpawnResponse"]

DEFAULT_SPAWN_QUEUE = "~/clawd/scheduler/spawn-queue/"

# Response status words -> the catalogue's status. "Finished" words also mean the sub-agent is done.
_SUCCESS = frozenset({"success", "succeeded", "ok", "spawned", "accepted", "started", "running", "active"})
_FINISHED = frozenset({"completed", "complete", "done", "finished"})
_FAILURE = frozenset({"failure", "failed", "error", "errored", "rejected", "cancelled", "canceled", "aborted"})
_TIMEOUT = frozenset({"timeout", "timed_out", "timedout", "expired"})
_IN_PROGRESS = frozenset({"pending", "processing", "picked_up", "in_progress", "queued", "claimed"})


class SpawnRequest:
    """A parsed request file."""

    __slots__ = ("label", "model", "request_id", "requested_at", "requested_by", "task", "traceparent",
                 "wait_for_result")

    def __init__(self, request_id: str, requested_at: float, label: str, *, model: str | None = None,
                 task: str | None = None, requested_by: str | None = None, wait_for_result: bool = False,
                 traceparent: str | None = None) -> None:
        self.request_id = request_id
        self.requested_at = requested_at
        self.label = label
        self.model = model
        self.task = task
        self.requested_by = requested_by
        self.wait_for_result = wait_for_result
        self.traceparent = traceparent


class SpawnResponse:
    """A parsed response file."""

    __slots__ = ("error", "processed_at", "request_id", "session_key", "status")

    def __init__(self, request_id: str, processed_at: float, status: str | None, *,
                 session_key: str | None = None, error: str | None = None) -> None:
        self.request_id = request_id
        self.processed_at = processed_at
        self.status = status
        self.session_key = session_key
        self.error = error


def _request_id(data: dict[str, Any]) -> str:
    value = data.get("requestId")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise InvalidRecord("field 'requestId' is missing or not a non-empty string")
    return value


def _parse_request(_path: str, data: dict[str, Any], _st: os.stat_result) -> SpawnRequest:
    request_id = _request_id(data)
    requested_at = parse_timestamp(data.get("requestedAt"))
    if requested_at is None:
        raise InvalidRecord("field 'requestedAt' is missing or not an ISO-8601 time / epoch number")
    spawn = data.get("spawn")
    if not isinstance(spawn, dict):
        raise InvalidRecord("field 'spawn' is missing or not an object")
    wait = data.get("waitForResult", False)
    return SpawnRequest(
        request_id, requested_at, optional_str(spawn, "label") or "unlabelled",
        model=optional_str(spawn, "model"), task=optional_str(spawn, "task"),
        requested_by=optional_str(data, "requestedBy"), wait_for_result=wait is True,
        traceparent=optional_str(data, "traceparent"),
    )


def _parse_response(_path: str, data: dict[str, Any], st: os.stat_result) -> SpawnResponse:
    request_id = _request_id(data)
    raw_processed = data.get("processedAt")
    # Missing processedAt: the file's mtime is when the spawner wrote it, which is the same moment.
    processed_at = st.st_mtime if raw_processed is None else parse_timestamp(raw_processed)
    if processed_at is None:
        raise InvalidRecord("field 'processedAt' is not an ISO-8601 time / epoch number")
    error = data.get("error")
    if isinstance(error, dict):  # {"message": ..., "code": ...} from some spawners
        error = error.get("message") or error.get("code") or "error"
    if error is not None and not isinstance(error, str):
        error = str(error)
    return SpawnResponse(request_id, processed_at, optional_str(data, "status"),
                         session_key=optional_str(data, "sessionKey"), error=error or None)


def _outcome(response: SpawnResponse) -> tuple[str, bool]:
    """(catalogue status or `pending`, finished) for a response."""
    word = (response.status or "").strip().lower()
    if word in _IN_PROGRESS:
        return "pending", False
    if word in _SUCCESS:
        return "success", False
    if word in _FINISHED:
        return "success", True
    if word in _FAILURE:
        return "failure", True
    if word in _TIMEOUT:
        return "timeout", True
    if not word:  # no status: the fields say what happened
        if response.error:
            return "failure", True
        return ("success", False) if response.session_key else (OTHER, True)
    return OTHER, True


class _Answer:
    """What was counted for one request id."""

    __slots__ = ("active_model", "final", "record")

    def __init__(self, record: SpawnResponse) -> None:
        self.record = record
        self.final = False
        self.active_model: str | None = None  # set while the sub-agent counts as active


class SpawnQueueWatcher(PollingWatcher):
    """Watches the spawn queue folders; see the module docstring for what is counted when."""

    __slots__ = ("_answers", "_count_existing", "_count_subagents", "_depth", "_first_scan", "_now", "_requests",
                 "_said_status", "requests", "responses", "root")

    source = "spawn_queue"
    component = "spawn"

    def __init__(
        self,
        telemetry: Telemetry,
        root: str | os.PathLike[str] | None = None,
        *,
        interval_s: float = 1.0,
        max_file_bytes: int = MAX_FILE_BYTES,
        partial_grace_s: float = PARTIAL_GRACE_S,
        count_existing: bool = True,
        count_subagents: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`count_existing=False`: responses already there at the first scan are history from before
        this process (a restart); they are tracked (depth, active sub-agents) but not counted again.
        `count_subagents=False`: leave spawn_subagent_* to another source that sees every sub-agent
        (the proxy's frame observer sees their sessions, also those not spawned through this queue)."""
        super().__init__(telemetry, interval_s=interval_s)
        self.root = os.path.expanduser(os.fspath(root if root is not None else DEFAULT_SPAWN_QUEUE))
        folder_args: dict[str, Any] = {"max_bytes": max_file_bytes, "partial_grace_s": partial_grace_s, "now": now}
        self.requests = JsonFolder(os.path.join(self.root, "requests"), self._errors, _parse_request, **folder_args)
        self.responses = JsonFolder(os.path.join(self.root, "responses"), self._errors, _parse_response,
                                    **folder_args)
        self._now = now
        self._count_existing = count_existing
        self._count_subagents = count_subagents
        self._first_scan = True
        self._requests: dict[str, SpawnRequest] = {}
        self._answers: dict[str, _Answer] = {}
        self._said_status: set[str] = set()
        self._depth = 0
        self._gauges.observe("spawn_queue_depth", self._observe_depth)

    @property
    def depth(self) -> int:
        """Requests waiting for a spawner (no response, not picked up), as of the last scan."""
        return self._depth

    def _observe_depth(self) -> Iterable[tuple[float, None]]:
        yield float(self._depth), None

    def _scan(self) -> None:
        requests = self.requests.scan()
        responses = self.responses.scan()
        backfill = self._first_scan and not self._count_existing
        self._first_scan = False
        present: dict[str, SpawnRequest] = dict(self._requests) if requests is None else {}
        for request in (requests or {}).values():
            present.setdefault(request.request_id, request)
            if request.request_id not in self._requests and request.request_id not in self._answers:
                self.telemetry.log("DEBUG", self.component, "Spawn request created", metadata={
                    "request_id": request.request_id, "label": request.label, "requested_by": request.requested_by,
                    "model": request.model,
                })
        if responses is not None:
            # Requests seen earlier but already removed still give their answer a latency and a span.
            known = {**self._requests, **present}
            answered: dict[str, SpawnResponse] = {}
            for response in responses.values():
                answered.setdefault(response.request_id, response)
            for request_id, response in answered.items():
                self._on_response(request_id, response, known.get(request_id), backfill)
            for request_id in [r for r in self._answers if r not in answered]:
                self._on_response_removed(request_id)
        self._requests = present
        depth = sum(1 for r in present if r not in self._answers)
        if depth != self._depth:
            self.telemetry.log("DEBUG", self.component, "Spawn queue depth changed",
                               metadata={"depth": depth, "previous": self._depth})
        self._depth = depth

    def _on_response(self, request_id: str, response: SpawnResponse, request: SpawnRequest | None,
                     backfill: bool) -> None:
        answer = self._answers.get(request_id)
        if answer is not None and answer.record is response:
            return  # unchanged file
        if answer is None:
            answer = self._answers[request_id] = _Answer(response)
        answer.record = response
        status, finished = _outcome(response)
        if status == "pending":
            if not answer.final:
                self.telemetry.log("DEBUG", self.component, "Spawn request picked up", metadata={
                    "request_id": request_id, "status": response.status})
            return
        if not answer.final:
            answer.final = True
            self._count(request_id, response, request, status=status, finished=finished, answer=answer,
                        backfill=backfill)
        elif answer.active_model is not None and finished:
            self._end_active(request_id, answer, response.status or status)

    def _count(self, request_id: str, response: SpawnResponse, request: SpawnRequest | None, *, status: str,
               finished: bool, answer: _Answer, backfill: bool) -> None:
        telemetry = self.telemetry
        model = model_family(request.model if request is not None else None)
        spawned = self._count_subagents and status == "success" and response.session_key is not None
        if spawned and not finished:
            answer.active_model = model
            telemetry.increment("spawn_subagent_active", {"model": model}, 1)
        if backfill:
            return
        if status == OTHER and response.status and response.status not in self._said_status \
                and len(self._said_status) < 100:
            self._said_status.add(response.status)
            telemetry.log("WARN", self.component,
                          f"Unknown spawn response status {response.status!r}, counted as other",
                          metadata={"request_id": request_id, "status": response.status})
        telemetry.increment("spawn_requests_total", {"status": status})
        if spawned:
            telemetry.increment("spawn_subagent_total", {"model": model})
        latency: float | None = None
        if request is not None:
            latency = response.processed_at - request.requested_at
            if latency >= 0:
                telemetry.histogram("spawn_queue_latency_seconds", latency)
            else:  # clocks of two writers disagree: no latency rather than a false zero
                latency = None
            self._span(request, response, status, latency)
        level = "INFO" if status == "success" else "WARN"
        telemetry.log(level, self.component, f"Spawn {status}", metadata={
            "request_id": request_id, "status": response.status, "session_key": response.session_key,
            "model": model, "error": response.error,
            "queue_latency_s": None if latency is None else round(latency, 3),
        })

    def _span(self, request: SpawnRequest, response: SpawnResponse, status: str, latency: float | None) -> None:
        start_ns = int(request.requested_at * 1e9)
        end_ns = max(start_ns, int(response.processed_at * 1e9))
        handle = self.telemetry.spawn_span(
            request.label, model=request.model, task=request.task, request_id=request.request_id,
            requested_by=request.requested_by, parent=request.traceparent, start_time=start_ns,
        ).start()
        handle.set("clawdbot.spawn.session_key", response.session_key)
        handle.set("clawdbot.spawn.queue_latency_s", latency)
        if status == OTHER:
            handle.set("clawdbot.status", OTHER)
        else:
            handle.set_status(status, response.error)
        handle.end(end_ns)

    def _on_response_removed(self, request_id: str) -> None:
        answer = self._answers.pop(request_id)
        if answer.active_model is not None:
            self._end_active(request_id, answer, "response removed")

    def _end_active(self, request_id: str, answer: _Answer, why: str) -> None:
        model, answer.active_model = answer.active_model, None
        self.telemetry.increment("spawn_subagent_active", {"model": model}, -1)
        self.telemetry.log("INFO", self.component, "Sub-agent no longer active",
                           metadata={"request_id": request_id, "session_key": answer.record.session_key,
                                     "model": model, "reason": why})

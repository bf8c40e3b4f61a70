"""Telemetry from the gateway protocol's frames: one observer for the proxy and the embedded gateway.

Fed every frame (connection, direction, parsed frame, receive time), it turns an `agent` run into one
trace and the other frames into the design's gateway, session, scheduler and task metrics:

    request  gateway.request agent          (the client's `agent` req -> its final res)
    └── session  invoke_agent main          (lifecycle start -> lifecycle end; GenAI usage and cost)
        ├── model_call  chat <model>        (lifecycle `model` phase -> next model phase / finishing)
        └── tool_call   execute_tool <name> (stream item kind tool: start -> end)

The trace is parented on the client's incoming `traceparent` when the req frame carries one. Frame
timestamps (`startedAt`, `endedAt`, `ts`, in ms) give span times when they are sane, else the receive
time does. All state is bounded: runs and requests that never finish are ended by `sweep()` with
status timeout, and the de-duplication sets are small LRUs (the same broadcast event reaches every
connection, and must count once).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from opentelemetry import trace

from clawdbot_otel import SpanHandle, Telemetry, model_family, session_type
from clawdbot_otel import audit as write_audit
from clawdbot_otel.collect import GaugeCallbacks, TaskInstrumentation
from clawdbot_otel.conventions import METRICS_BY_NAME, OTHER
from clawdbot_otel.frames import EventFrame, Frame, RequestFrame, ResponseFrame

__all__ = ["FrameObserver"]

_NS = 1_000_000_000
_MS = 1_000_000
#: A frame timestamp further than this from the receive time is not trusted (clock skew, garbage).
_MAX_SKEW_NS = 600 * _NS
_WINDOW_S = 60

_METHODS = next(lb.values for lb in METRICS_BY_NAME["gateway_requests_total"].labels if lb.name == "method")
_STATUSES = next(lb.values for lb in METRICS_BY_NAME["gateway_requests_total"].labels if lb.name == "status")
_TOOL_OK = frozenset({"completed", "complete", "ok", "success", "succeeded", "done"})
_TOOL_TIMEOUT = frozenset({"timeout", "timed_out", "timedout"})
_TASK_STATUS = {
    "completed": "success", "succeeded": "success", "success": "success", "ok": "success",
    "failed": "failure", "error": "failure", "errored": "failure", "lost": "failure",
    "timed_out": "timeout", "timeout": "timeout",
    "cancelled": OTHER, "canceled": OTHER, "aborted": OTHER,
}
#: Methods that start an agent run and answer before it ends (the run is parented on their request span).
_RUN_STARTING_METHODS = frozenset({"chat.send", "sessions.send", "sessions.create", "sessions.steer"})
#: Methods that change the gateway's configuration: each goes to the audit channel.
_CONFIG_METHODS = frozenset({"config.set", "config.apply", "config.patch"})
_CRON_STATUS = {"ok": "success", "success": "success", "error": "failure", "failed": "failure",
                "timeout": "timeout", "timed_out": "timeout"}


def _method_label(method: str) -> str:
    return method if method in _METHODS else OTHER


def _error_type(error: Mapping[str, Any] | None, default: str = "runtime") -> str:
    """The catalogue's error_type for a gateway ErrorShape."""
    if not error:
        return default
    code = str(error.get("code") or "").upper()
    message = str(error.get("message") or "").lower()
    if "TIMEOUT" in code or "timed out" in message or "timeout" in message:
        return "timeout"
    if code in ("UNAUTHORIZED", "FORBIDDEN", "NOT_PAIRED", "AUTH") or "unauthorized" in message or "auth" in message:
        return "auth"
    if code == "INVALID_REQUEST":
        return "protocol"
    return default


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ts(ms: Any, fallback_ns: int) -> int:
    """A frame's epoch-ms timestamp as ns, when present and within the skew window of the receive time."""
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        ns = int(ms * _MS)
        if abs(ns - fallback_ns) <= _MAX_SKEW_NS:
            return ns
    return fallback_ns


class _LRU:
    """A bounded set: `add` says whether the key is new."""

    __slots__ = ("_cap", "_items")

    def __init__(self, cap: int) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._cap = cap

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add(self, key: Any) -> bool:
        items = self._items
        if key in items:
            return False
        items[key] = None
        if len(items) > self._cap:
            items.popitem(last=False)
        return True


class _Conn:
    __slots__ = ("auth_done", "client_id", "connect_id", "headers_json", "id", "requests")

    def __init__(self, conn_id: str, headers_json: str | None) -> None:
        self.id = conn_id
        self.headers_json = headers_json
        self.client_id: str | None = None
        self.connect_id: str | None = None
        self.auth_done = False
        self.requests: dict[str, _Request] = {}


class _Request:
    __slots__ = ("conn", "deadline_ns", "id", "label", "method", "run_key", "span", "start_ns")

    def __init__(self, conn: _Conn, frame_id: str, method: str, span: SpanHandle, *, start_ns: int,
                 deadline_ns: int) -> None:
        self.conn = conn
        self.id = frame_id
        self.method = method
        self.label = _method_label(method)
        self.span = span
        self.start_ns = start_ns
        self.deadline_ns = deadline_ns
        self.run_key: str | None = None


class _Run:
    __slots__ = (
        "active_counted", "agent_id", "cost_usd", "deadline_ns", "end_ns", "error_message", "error_type",
        "id", "last_ns", "last_seq", "model", "model_call", "output_base", "output_tokens", "provider", "request",
        "response_model", "session", "session_key", "start_ns", "stop_reason", "subagent_counted", "tools",
        "type", "usage",
    )

    def __init__(self, run_id: str, request: _Request | None, deadline_ns: int) -> None:
        self.id = run_id
        self.request = request
        self.deadline_ns = deadline_ns
        self.session: SpanHandle | None = None
        self.session_key: str | None = None
        self.agent_id: str | None = None
        self.type = OTHER
        self.provider: str | None = None
        self.model: str | None = None
        self.response_model: str | None = None
        self.start_ns = 0
        self.end_ns: int | None = None
        self.model_call: SpanHandle | None = None
        self.output_base = 0
        self.output_tokens = 0
        self.tools: dict[str, tuple[SpanHandle, str]] = {}
        self.last_seq: int | None = None
        self.last_ns = 0  # the run's last frame: a run that goes quiet ends there, not at the sweep
        self.stop_reason: str | None = None
        self.error_message: str | None = None
        self.error_type: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.cost_usd: float | None = None
        self.active_counted = False
        self.subagent_counted = False


class FrameObserver:
    """Spans, metrics and logs from gateway frames; never alters or delays them.

    Parameters
    ----------
    run_timeout_s:
        a run with no frame for this long is ended with status timeout (an `agent` req's own
        `timeout` param, plus a minute, is used when larger).
    request_timeout_s:
        a request with no response for this long is ended with status timeout.
    finish_grace_s:
        after a run's lifecycle `end`, how long to wait for the final res that carries its usage.
    count_cron:
        count `cron` events into the scheduler metrics (off when the scheduler itself is instrumented).
    count_subagents:
        count sub-agent runs (session keys `agent:<id>:subagent:<uuid>`) into spawn_subagent_*; off when
        a `SpawnQueueWatcher` over the same spawn queue counts them from its response files.
    tasks:
        the `TaskInstrumentation` that `task` events feed (completions, the 24 h completion rate, the
        3-layer validation results); one is made when not given.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        run_timeout_s: float = 900.0,
        request_timeout_s: float = 300.0,
        finish_grace_s: float = 30.0,
        max_runs: int = 10_000,
        max_requests: int = 10_000,
        count_cron: bool = True,
        count_subagents: bool = True,
        tasks: TaskInstrumentation | None = None,
        register_gauges: bool = True,
        clock: Any = time.time_ns,
    ) -> None:
        self.telemetry = telemetry
        self.run_timeout_ns = int(run_timeout_s * _NS)
        self.request_timeout_ns = int(request_timeout_s * _NS)
        self.finish_grace_ns = int(finish_grace_s * _NS)
        self.max_runs = max_runs
        self.max_requests = max_requests
        self.count_cron = count_cron
        self.count_subagents = count_subagents
        self.tasks = tasks if tasks is not None else TaskInstrumentation(telemetry)
        self.clock = clock
        self._conns: dict[str, _Conn] = {}
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._run_requests: dict[str, _Request] = {}  # run id / idempotency key -> the agent req
        self._request_count = 0
        self._seen_events = _LRU(4096)
        self._finished_tasks = _LRU(4096)
        self._finished_runs = _LRU(4096)
        self._running_jobs: dict[str, int] = {}  # job id -> when its `started` event arrived
        # run id -> the request span of the call that started it (chat.send, sessions.send answer at
        # once; the run goes on after the request span ended and is parented on it all the same)
        self._run_parents: OrderedDict[str, trace.NonRecordingSpan] = OrderedDict()
        self._job_names: dict[str, str] = {}
        self._next_runs: dict[str, float] = {}  # job name -> next run, epoch s
        self._ring_counts = [0] * _WINDOW_S
        self._ring_secs = [0] * _WINDOW_S
        self.started_ns = clock()
        self.last_tick_ns: int | None = None
        self.last_health_ok: bool | None = None
        self._own_tasks = tasks is None
        self._gauges = GaugeCallbacks(telemetry)
        if register_gauges:
            self._gauges.observe("gateway_throughput_requests_per_second", self._throughput_observation)
            self._gauges.observe("scheduler_next_run_seconds", self._next_run_observations)

    # --- public feeding API -----------------------------------------------------------------------
    def connection_opened(self, conn_id: str, headers: Mapping[str, str] | None = None) -> None:
        headers_json = None
        if headers:
            redacted = self.telemetry.redactor.mapping(headers)
            headers_json = orjson.dumps(redacted, default=str).decode()
        self._conns[conn_id] = _Conn(conn_id, headers_json)

    def connection_closed(self, conn_id: str, code: int | None = None, reason: str = "") -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        try:
            now = self.clock()
            for req in list(conn.requests.values()):
                if req.id == conn.connect_id and not conn.auth_done:
                    self._auth(conn, False, {"code": "CLOSED", "message": f"closed ({code}) before hello-ok"})
                    self._end_request(req, now, "failure", "auth", "connection closed before hello-ok")
                else:
                    self._end_request(req, now, "failure", "runtime", "connection closed")
        except Exception:
            self._internal_error()

    def request(self, conn_id: str, frame: RequestFrame, received_ns: int | None = None) -> SpanHandle | None:
        """A client's req frame: starts its request span (returned, for the upstream `traceparent`)."""
        try:
            return self._on_request(conn_id, frame, received_ns or self.clock())
        except Exception:
            self._internal_error()
            return None

    def frame(self, conn_id: str, direction: str, frame: Frame, received_ns: int | None = None) -> None:
        """Any other frame (`direction` c2s or s2c)."""
        try:
            now = received_ns or self.clock()
            if isinstance(frame, RequestFrame):
                if direction == "c2s":
                    self._on_request(conn_id, frame, now)
                else:
                    self._source_error("unexpected_s2c_req")
            elif direction != "s2c":  # only the gateway answers and broadcasts
                self._source_error(f"unexpected_c2s_{'res' if isinstance(frame, ResponseFrame) else 'event'}")
            elif isinstance(frame, ResponseFrame):
                self._on_response(conn_id, frame, now)
            else:
                self._on_event(frame, now)
        except Exception:
            self._internal_error()

    def invalid(self, direction: str, reason: str) -> None:
        """A message that is not a frame (it was passed on or answered, never raised)."""
        self.telemetry.increment("clawdbot_otel_source_errors_total", {"source": "frames", "reason": reason})
        if direction == "c2s":
            self.telemetry.increment("gateway_errors_total", {"error_type": "protocol"})

    def sweep(self, now_ns: int | None = None) -> int:
        """End runs and requests that outlived their timeouts; returns how many were ended."""
        now = now_ns or self.clock()
        ended = 0
        try:
            for run in [r for r in self._runs.values() if r.deadline_ns <= now]:
                if run.end_ns is not None:
                    self._finish_run(run, now)
                else:
                    self._timeout_run(run, now)
                ended += 1
            for conn in list(self._conns.values()):
                for req in [r for r in conn.requests.values() if r.deadline_ns <= now]:
                    self._end_request(req, now, "timeout", "timeout", "no response")
                    ended += 1
            for job_id in [j for j, started in self._running_jobs.items() if now - started > self.run_timeout_ns]:
                del self._running_jobs[job_id]  # its `finished` event never came: not running any more
                self.telemetry.increment("scheduler_jobs_active", None, -1)
        except Exception:
            self._internal_error()
        return ended

    def close(self, now_ns: int | None = None) -> None:
        """The gateway stops: end every open run and request now, marked as cut short."""
        now = now_ns or self.clock()
        try:
            for run in list(self._runs.values()):
                if run.end_ns is not None:
                    self._finish_run(run, now)
                else:
                    self._timeout_run(run, now, "gateway stopped before the run finished")
            for conn in list(self._conns.values()):
                for req in list(conn.requests.values()):
                    self._end_request(req, now, "failure", "runtime", "gateway stopped before the response")
            if self._running_jobs:
                self.telemetry.increment("scheduler_jobs_active", None, -len(self._running_jobs))
                self._running_jobs.clear()
        except Exception:
            self._internal_error()
        finally:
            self._gauges.close()
            if self._own_tasks:
                self.tasks.close()

    def run_traceparent(self, run_id: str) -> str | None:
        """The session span of a live run, as a `traceparent` (for work the run hands on)."""
        run = self._runs.get(run_id)
        if run is not None and run.session is not None:
            return run.session.traceparent
        return None

    def throughput(self, now_ns: int | None = None) -> float:
        """Requests completed per second over the last minute."""
        now_s = (now_ns or self.clock()) // _NS
        total = 0
        for count, sec in zip(self._ring_counts, self._ring_secs, strict=True):
            if now_s - sec < _WINDOW_S:
                total += count
        return total / _WINDOW_S

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    @property
    def open_requests(self) -> int:
        return self._request_count

    # --- requests and responses ------------------------------------------------------------------
    def _on_request(self, conn_id: str, frame: RequestFrame, now: int) -> SpanHandle:
        conn = self._conns.get(conn_id)
        if conn is None:
            conn = self._conns[conn_id] = _Conn(conn_id, None)
        params = frame.params if isinstance(frame.params, dict) else None
        method = frame.method
        if method == "connect" and params is not None:
            client = params.get("client")
            if isinstance(client, dict) and isinstance(client.get("id"), str):
                conn.client_id = client["id"]
            conn.connect_id = frame.id
        span = self.telemetry.request_span(
            method, request_id=frame.id, body=params, connection_id=conn.id, client_id=conn.client_id,
            parent=frame.traceparent, start_time=now,
        ).start()
        if conn.headers_json is not None:
            span.set("clawdbot.request.headers", conn.headers_json)
        deadline = now + self.request_timeout_ns
        req = _Request(conn, frame.id, method, span, start_ns=now, deadline_ns=deadline)
        if method == "agent" and params is not None:
            timeout_s = _num(params.get("timeout"))
            req.deadline_ns = now + max(self.run_timeout_ns, int(((timeout_s or 0) + 60) * _NS))
            key = params.get("idempotencyKey") or params.get("runId")
            if isinstance(key, str):
                req.run_key = key
                self._run_requests[key] = req
        elif method in _RUN_STARTING_METHODS and params is not None:
            key = params.get("idempotencyKey")
            if isinstance(key, str):  # OpenClaw uses it as the run id of the turn it starts
                self._set_run_parent(key, span)
        old = conn.requests.get(frame.id)
        if old is not None:  # a reused id: the earlier request will never get its response
            self._end_request(old, now, "failure", "protocol", "request id reused")
        conn.requests[frame.id] = req
        self._request_count += 1
        if self._request_count > self.max_requests:
            self._evict_oldest_request(now)
        return span

    def _on_response(self, conn_id: str, frame: ResponseFrame, now: int) -> None:
        conn = self._conns.get(conn_id)
        req = conn.requests.get(frame.id) if conn is not None else None
        if req is None or conn is None:
            return  # a response to something we did not see (or already ended)
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if req.id == conn.connect_id and not conn.auth_done:
            ok = frame.ok and payload.get("type") == "hello-ok"
            self._auth(conn, ok, frame.error, payload.get("auth"))
            if ok:
                self._end_request(req, now, "success")
            else:
                self._end_request(req, now, "failure", "auth", self._error_message(frame.error))
            return
        if req.method == "agent":
            self._on_agent_response(req, frame, payload, now)
            return
        if req.method in _CONFIG_METHODS:
            self._config_change(req, frame)
        if frame.ok:
            if self.count_cron and req.method == "cron.list":
                self._cron_list(payload, now)
            if req.method in _RUN_STARTING_METHODS and isinstance(payload.get("runId"), str):
                self._set_run_parent(payload["runId"], req.span)
            self._end_request(req, now, "success")
        else:
            error_type = _error_type(frame.error)
            status = "timeout" if error_type == "timeout" else "failure"
            self._end_request(req, now, status, error_type, self._error_message(frame.error))

    def _on_agent_response(self, req: _Request, frame: ResponseFrame, payload: Mapping[str, Any], now: int) -> None:
        run_id = payload.get("runId") if isinstance(payload.get("runId"), str) else req.run_key
        if frame.ok and payload.get("status") == "accepted":
            if isinstance(run_id, str):
                if req.run_key and req.run_key != run_id:
                    self._run_requests.pop(req.run_key, None)
                req.run_key = run_id
                self._run_requests[run_id] = req
                run = self._runs.get(run_id)
                if run is not None and run.request is None:
                    run.request = req
                if run is None and isinstance(payload.get("sessionKey"), str):
                    pass  # the run starts with its first event
            return
        run = self._runs.get(run_id) if isinstance(run_id, str) else None
        if frame.ok:
            status_word = str(payload.get("status") or "ok")
            status = {"ok": "success", "completed": "success", "timeout": "timeout"}.get(status_word, "failure")
            error_type = None if status == "success" else ("timeout" if status == "timeout" else "runtime")
            message = None if status == "success" else str(payload.get("summary") or status_word)
        else:
            error_type = _error_type(frame.error)
            status = "timeout" if error_type == "timeout" else "failure"
            message = self._error_message(frame.error)
        if run is not None:
            result = payload.get("result")
            meta = result.get("meta") if isinstance(result, dict) else None
            agent_meta = meta.get("agentMeta") if isinstance(meta, dict) else None
            if isinstance(agent_meta, dict):
                self._apply_agent_meta(run, agent_meta)
            if status != "success" and run.error_message is None:
                run.error_message = message
                run.error_type = error_type
            if run.end_ns is None:
                run.end_ns = now
            self._finish_run(run, now)
        self._end_request(req, now, status, error_type, message)

    def _end_request(self, req: _Request, now: int, status: str, error_type: str | None = None,
                     message: str | None = None) -> None:
        conn = req.conn
        if conn.requests.pop(req.id, None) is None:
            return
        self._request_count -= 1
        if req.run_key is not None and self._run_requests.get(req.run_key) is req:
            del self._run_requests[req.run_key]
        run = self._runs.get(req.run_key) if req.run_key else None
        if run is not None and run.request is req:
            run.request = None  # the run goes on; it is finished by its own frames or the sweep
        end = max(now, req.start_ns)
        span = req.span
        if status == "success":
            span.set_status("success")
        else:
            span.set_status(status if status in _STATUSES else "failure", message,
                            error_type if status != "timeout" else "timeout")
        span.end(end)
        tel = self.telemetry
        tel.increment("gateway_requests_total", {"method": req.label, "status": status})
        tel.histogram("gateway_request_latency_seconds", (end - req.start_ns) / _NS, {"method": req.label})
        if error_type is not None:
            tel.increment("gateway_errors_total", {"error_type": error_type})
        sec = now // _NS
        idx = sec % _WINDOW_S
        if self._ring_secs[idx] != sec:
            self._ring_secs[idx] = sec
            self._ring_counts[idx] = 0
        self._ring_counts[idx] += 1

    def _set_run_parent(self, run_id: str, span: SpanHandle) -> None:
        parents = self._run_parents
        parents[run_id] = trace.NonRecordingSpan(span.span.get_span_context())  # the ids, not the whole span
        if len(parents) > 1024:
            parents.popitem(last=False)

    def _config_change(self, req: _Request, frame: ResponseFrame) -> None:
        """config.set/apply/patch through the gateway: an audit record with who and whether it applied."""
        conn = req.conn
        metadata: dict[str, Any] = {"method": req.method, "request_id": req.id, "connection_id": conn.id,
                                    "client_id": conn.client_id}
        if not frame.ok:
            metadata["error"] = self._error_message(frame.error)
        write_audit("config.change", outcome="success" if frame.ok else "failure", actor=conn.client_id,
                    telemetry=self.telemetry, metadata=metadata)

    def _evict_oldest_request(self, now: int) -> None:
        oldest: _Request | None = None
        for conn in self._conns.values():
            for req in conn.requests.values():
                if oldest is None or req.start_ns < oldest.start_ns:
                    oldest = req
                break  # dicts keep insertion order: the first is the connection's oldest
        if oldest is not None:
            self._source_error("request_overflow")
            self._end_request(oldest, now, "timeout", "timeout", "evicted: too many pending requests")

    @staticmethod
    def _error_message(error: Mapping[str, Any] | None) -> str | None:
        if not error:
            return None
        message = error.get("message")
        return str(message)[:500] if message is not None else str(error.get("code") or "error")

    def _auth(self, conn: _Conn, ok: bool, error: Mapping[str, Any] | None,
              auth: Any = None) -> None:
        conn.auth_done = True
        metadata: dict[str, Any] = {"connection_id": conn.id, "client_id": conn.client_id}
        if isinstance(auth, dict):
            metadata.update({"auth_method": auth.get("method"), "role": auth.get("role"),
                             "scopes": auth.get("scopes")})
        if ok:
            audit(self.telemetry, "auth.success", "success", metadata)
        else:
            metadata["error"] = self._error_message(error)
            audit(self.telemetry, "auth.failure", "failure", metadata)

    # --- events ----------------------------------------------------------------------------------
    def _on_event(self, frame: EventFrame, now: int) -> None:
        event = frame.event
        payload = frame.payload
        if not isinstance(payload, dict):
            if event not in ("tick",):
                self._source_error("event_without_payload")
            return
        if event == "agent":
            self._agent_event(payload, now)
        elif event == "task":
            self._task_event(payload, now)
        elif event == "cron":
            if self.count_cron:
                self._cron_event(payload, now)
        elif event == "tick":
            self.last_tick_ns = now
        elif event == "health":
            ok = payload.get("ok")
            if ok is False and self.last_health_ok is not False:
                self.telemetry.increment("gateway_errors_total", {"error_type": "runtime"})
                self.telemetry.log("WARN", "gateway", "Gateway health check failed",
                                   metadata={"duration_ms": payload.get("durationMs")})
            self.last_health_ok = ok if isinstance(ok, bool) else None
            self.last_tick_ns = now

    def _agent_event(self, payload: Mapping[str, Any], now: int) -> None:
        run_id = payload.get("runId")
        data = payload.get("data")
        if not isinstance(run_id, str) or not isinstance(data, dict):
            self._source_error("agent_event_shape")
            return
        run = self._runs.get(run_id)
        if run is None:
            if run_id in self._run_requests or run_id not in self._finished_runs:
                run = self._new_run(run_id, now)
            else:
                return  # a late event of a run already finished
        seq = payload.get("seq")
        if isinstance(seq, int):
            if run.last_seq is not None and seq <= run.last_seq:
                return  # the same event seen on another connection
            run.last_seq = seq
        ts = _ts(payload.get("ts"), now)
        run.last_ns = max(run.last_ns, ts)
        if run.session_key is None and isinstance(payload.get("sessionKey"), str):
            run.session_key = payload["sessionKey"]
            run.type = session_type(run.session_key)
        if run.agent_id is None and isinstance(payload.get("agentId"), str):
            run.agent_id = payload["agentId"]
        run.deadline_ns = max(run.deadline_ns, now + self.run_timeout_ns) if run.end_ns is None else run.deadline_ns
        stream = payload.get("stream")
        if stream == "lifecycle":
            self._lifecycle(run, data, ts, now)
        elif stream == "item":
            if data.get("kind") == "tool":
                self._tool_item(run, data, ts)
        elif stream == "usage":
            out = _num(data.get("outputTokens"))
            if out is not None and out >= run.output_tokens:
                run.output_tokens = int(out)

    def _new_run(self, run_id: str, now: int) -> _Run:
        req = self._run_requests.get(run_id)
        deadline = req.deadline_ns if req is not None else now + self.run_timeout_ns
        run = _Run(run_id, req, deadline)
        self._runs[run_id] = run
        if len(self._runs) > self.max_runs:
            _, oldest = next(iter(self._runs.items()))
            self._source_error("run_overflow")
            self._timeout_run(oldest, now)
        return run

    def _ensure_session(self, run: _Run, ts: int) -> SpanHandle:
        if run.session is None:
            parent = run.request.span if run.request is not None else self._run_parents.pop(run.id, None)
            start = ts if run.request is None else max(ts, run.request.start_ns)
            run.start_ns = start
            agent = run.agent_id or "agent"
            run.session = self.telemetry.session_span(
                agent, session_key=run.session_key, agent_id=agent, run_id=run.id, parent=parent,
                start_time=start,
            ).start()
            self.telemetry.increment("session_active", {"type": run.type})
            run.active_counted = True
        return run.session

    def _lifecycle(self, run: _Run, data: Mapping[str, Any], ts: int, now: int) -> None:
        phase = data.get("phase")
        if phase == "start":
            self._ensure_session(run, _ts(data.get("startedAt"), ts))
        elif phase == "model":
            session = self._ensure_session(run, ts)
            self._end_model_call(run, ts, None)
            model = data.get("model")
            if isinstance(model, str) and model:
                provider = data.get("provider") if isinstance(data.get("provider"), str) else None
                if run.model is None:
                    run.model = model
                    run.provider = provider
                    session.update({"gen_ai.request.model": model, "gen_ai.provider.name": provider,
                                    "clawdbot.session.model": model_family(model)})
                if run.type == "subagent" and self.count_subagents and not run.subagent_counted:
                    run.subagent_counted = True
                    labels = {"model": model_family(model)}
                    self.telemetry.increment("spawn_subagent_total", labels)
                    self.telemetry.increment("spawn_subagent_active", labels)
                run.model_call = self.telemetry.model_call_span(
                    model, provider=provider, parent=session, start_time=ts).start()
                run.output_base = run.output_tokens
        elif phase == "finishing":
            end = _ts(data.get("endedAt"), ts)
            error = data.get("error")
            if isinstance(data.get("stopReason"), str):
                run.stop_reason = data["stopReason"]
            self._end_model_call(run, end, str(error) if error else None)
        elif phase in ("end", "error"):
            end = _ts(data.get("endedAt"), ts)
            self._ensure_session(run, end)
            self._end_model_call(run, end, None)
            for call_id in list(run.tools):
                self._end_tool(run, call_id, end, "failure", "tool did not finish before the run ended")
            if isinstance(data.get("stopReason"), str):
                run.stop_reason = data["stopReason"]
            error = data.get("error")
            if error or phase == "error":
                run.error_message = str(error or "run failed")[:500]
                run.error_type = "runtime"
            run.end_ns = max(end, run.start_ns)
            if run.request is None:
                self._finish_run(run, now)
            else:  # the final res carries usage and cost: wait for it (bounded)
                run.deadline_ns = now + self.finish_grace_ns

    def _end_model_call(self, run: _Run, end: int, error: str | None) -> None:
        span = run.model_call
        if span is None:
            return
        run.model_call = None
        produced = run.output_tokens - run.output_base
        if produced > 0:
            span.set("gen_ai.usage.output_tokens", produced)
        if run.stop_reason and error is None:
            span.set("gen_ai.response.finish_reasons", [run.stop_reason])
        if error is not None:
            span.set_status("failure", error[:500], "model")
            self.telemetry.increment("session_errors_total", {"error_type": "model"})
        else:
            span.set_status("success")
        span.end(max(end, span.span.start_time or 0))  # type: ignore[attr-defined]

    def _tool_item(self, run: _Run, data: Mapping[str, Any], ts: int) -> None:
        call_id = data.get("toolCallId") or data.get("itemId")
        if not isinstance(call_id, str):
            self._source_error("tool_item_shape")
            return
        phase = data.get("phase")
        raw_name = data.get("name")
        name = raw_name if isinstance(raw_name, str) and raw_name else "unknown"
        if phase == "start":
            if call_id in run.tools:
                return
            session = self._ensure_session(run, ts)
            start = _ts(data.get("startedAt"), ts)
            self._end_model_call(run, start, None)  # the model's answer asked for this tool: that call is over
            summary = data.get("title") or data.get("meta")  # recorded only with content capture on
            span = self.telemetry.tool_call_span(name, call_id=call_id, params=summary, parent=session,
                                                 start_time=start).start()
            run.tools[call_id] = (span, name)
        elif phase in ("end", "error"):
            if call_id not in run.tools:  # an end without a start: still one span, zero length
                self._tool_item(run, {**data, "phase": "start"}, ts)
            status_word = str(data.get("status") or "").lower()
            error = data.get("error")
            failed = bool(error) or data.get("isError") is True or phase == "error" or (
                status_word not in _TOOL_OK and status_word != "")
            status = "timeout" if status_word in _TOOL_TIMEOUT else "failure" if failed else "success"
            message = None
            if status != "success":
                message = str(error or data.get("errorMessage") or status_word or "tool failed")[:500]
            self._end_tool(run, call_id, _ts(data.get("endedAt"), ts), status, message)

    def _end_tool(self, run: _Run, call_id: str, end: int, status: str, message: str | None) -> None:
        entry = run.tools.pop(call_id, None)
        if entry is None:
            return
        span, name = entry
        if status == "success":
            span.set_status("success")
        else:
            error_type = "tool" if status == "failure" else "timeout"
            span.set_status(status, message, error_type)
            self.telemetry.increment("session_errors_total", {"error_type": error_type})
        span.end(max(end, span.span.start_time or 0))  # type: ignore[attr-defined]
        self.telemetry.increment("session_tool_calls_total", {"tool_name": name, "status": status})

    def _apply_agent_meta(self, run: _Run, meta: Mapping[str, Any]) -> None:
        if isinstance(meta.get("model"), str):
            run.response_model = meta["model"]
            if run.model is None:
                run.model = meta["model"]
        if run.provider is None and isinstance(meta.get("provider"), str):
            run.provider = meta["provider"]
        usage = meta.get("usage")
        if isinstance(usage, dict):
            run.usage = usage
            cost = usage.get("cost")
            if isinstance(cost, dict) and _num(cost.get("total")) is not None:
                run.cost_usd = _num(cost.get("total"))
        if _num(meta.get("costUsd")) is not None:
            run.cost_usd = _num(meta.get("costUsd"))

    def _finish_run(self, run: _Run, now: int, status: str | None = None,
                    timeout_message: str = "run did not finish in time") -> None:
        if self._runs.pop(run.id, None) is None:
            return
        self._finished_runs.add(run.id)
        end = run.end_ns if run.end_ns is not None else now
        session = self._ensure_session(run, end)
        end = max(end, run.start_ns)
        self._end_model_call(run, end, None)
        for call_id in list(run.tools):
            self._end_tool(run, call_id, end, "timeout" if status == "timeout" else "failure",
                           "tool did not finish before the run ended")
        family = model_family(run.model)
        tel = self.telemetry
        usage = run.usage or {"output": run.output_tokens}
        tokens = {"input": _num(usage.get("input")), "output": _num(usage.get("output")),
                  "cache_read": _num(usage.get("cacheRead")), "cache_write": _num(usage.get("cacheWrite"))}
        for token_type, count in tokens.items():
            if count:
                tel.increment("session_tokens_used", {"model": family, "token_type": token_type}, count)
        total = _num(usage.get("total")) or sum(c for c in tokens.values() if c)
        if run.cost_usd:
            tel.increment("session_cost_usd_total", {"model": family}, run.cost_usd)
        duration_s = (end - run.start_ns) / _NS
        session.update({
            "gen_ai.usage.input_tokens": int(tokens["input"]) if tokens["input"] is not None else None,
            "gen_ai.usage.output_tokens": int(tokens["output"]) if tokens["output"] is not None else None,
            "gen_ai.usage.cache_read.input_tokens":
                int(tokens["cache_read"]) if tokens["cache_read"] is not None else None,
            "gen_ai.usage.cache_creation.input_tokens":
                int(tokens["cache_write"]) if tokens["cache_write"] is not None else None,
            "gen_ai.response.model": run.response_model or run.model,
            "gen_ai.response.finish_reasons": [run.stop_reason] if run.stop_reason else None,
            "clawdbot.session.tokens": int(total),
            "clawdbot.session.cost_usd": run.cost_usd,
            "clawdbot.session.duration_s": round(duration_s, 6),
            "clawdbot.session.stop_reason": run.stop_reason,
        })
        if run.model is not None and run.session is not None:
            session.update({"gen_ai.request.model": run.model, "clawdbot.session.model": family,
                            "gen_ai.provider.name": run.provider})
        if status == "timeout":
            session.set_status("timeout", timeout_message, "timeout")
            tel.increment("session_errors_total", {"error_type": "timeout"})
        elif run.error_message is not None:
            session.set_status("failure", run.error_message, run.error_type or "runtime")
            if run.error_type not in ("model",):
                tel.increment("session_errors_total", {"error_type": run.error_type or "runtime"})
        else:
            session.set_status("success")
        session.end(end)
        labels = {"type": run.type, "model": family}
        tel.increment("session_total", labels)
        tel.histogram("session_duration_seconds", max(duration_s, 0.0), labels)
        if run.active_counted:
            tel.increment("session_active", {"type": run.type}, -1)
        if run.subagent_counted:
            tel.increment("spawn_subagent_active", {"model": family}, -1)
        tel.log(
            "INFO" if status is None and run.error_message is None else "WARN", "session",
            "Session completed" if status is None and run.error_message is None else "Session failed",
            session_id=run.session_key, duration_ms=round(duration_s * 1000, 3), span=session,
            metadata={"run_id": run.id, "model": run.model, "type": run.type, "tokens": int(total),
                      "cost_usd": run.cost_usd, "status": status or ("failure" if run.error_message else "success"),
                      "error": run.error_message},
        )

    def _timeout_run(self, run: _Run, now: int, message: str = "run did not finish in time") -> None:
        """End a run that went quiet (or the gateway stops): its spans end at its last frame."""
        end = run.last_ns or now
        for call_id in list(run.tools):
            self._end_tool(run, call_id, end, "timeout", message)
        span = run.model_call
        if span is not None:
            run.model_call = None
            span.set_status("timeout", message, "timeout")
            span.end(max(end, span.span.start_time or 0))  # type: ignore[attr-defined]
        run.end_ns = end
        req = run.request
        self._finish_run(run, now, "timeout", message)
        if req is not None:
            self._end_request(req, now, "timeout", "timeout", message)

    # --- tasks, cron -----------------------------------------------------------------------------
    def _task_event(self, payload: Mapping[str, Any], now: int) -> None:
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
        if status is None or not isinstance(task_id, str) or not self._finished_tasks.add(task_id):
            return
        phase = str(task.get("phase") or task.get("kind") or OTHER)
        ended, started, created = _num(task.get("endedAt")), _num(task.get("startedAt")), _num(task.get("createdAt"))
        duration_s = latency_s = None
        if ended is not None and started is not None and ended >= started:
            duration_s = (ended - started) / 1000
        if ended is not None and created is not None and ended >= created:
            latency_s = (ended - created) / 1000
        self.tasks.complete(task_id, status, phase, duration_s=duration_s, latency_s=latency_s)

    def _validation(self, task_id: str, task: Mapping[str, Any], item: Mapping[str, Any], now: int) -> None:
        layer = item.get("layer")
        if layer not in ("L1", "L2", "L3"):
            self._source_error("validation_shape")
            return
        if not self._seen_events.add(("validation", task_id, layer, item.get("at"))):
            return
        run = self._runs.get(str(task.get("runId") or ""))
        reason = item.get("reason")
        self.tasks.validate(str(layer), item.get("result") in ("pass", "passed", True),
                            reason=str(reason) if reason else None, evidence=item.get("evidence"), task_id=task_id,
                            parent=run.session if run is not None else None)

    def _job_name(self, job_id: str, payload: Mapping[str, Any]) -> str:
        name = payload.get("jobName") or payload.get("name")
        if isinstance(name, str) and name:
            if len(self._job_names) < 1000:
                self._job_names[job_id] = name
            return name
        return self._job_names.get(job_id, job_id)

    def _cron_event(self, payload: Mapping[str, Any], now: int) -> None:
        job_id = payload.get("jobId")
        action = payload.get("action")
        if not isinstance(job_id, str) or not isinstance(action, str):
            self._source_error("cron_event_shape")
            return
        if not self._seen_events.add(("cron", job_id, action, payload.get("runAtMs"), payload.get("ts"))):
            return
        name = self._job_name(job_id, payload)
        next_run = _num(payload.get("nextRunAtMs"))
        if next_run is not None:
            self._set_next_run(name, next_run / 1000)
        tel = self.telemetry
        if action == "started":
            if job_id not in self._running_jobs and len(self._running_jobs) < 1000:
                self._running_jobs[job_id] = now
                tel.increment("scheduler_jobs_active", None, 1)
        elif action == "finished":
            if self._running_jobs.pop(job_id, None) is not None:
                tel.increment("scheduler_jobs_active", None, -1)
            status = _CRON_STATUS.get(str(payload.get("status") or "ok"), OTHER)
            tel.increment("scheduler_jobs_total", {"job_name": name, "status": status})
            duration_ms = _num(payload.get("durationMs"))
            if duration_ms is not None and duration_ms >= 0:
                tel.histogram("scheduler_job_latency_seconds", duration_ms / 1000, {"job_name": name})
            error = payload.get("error")
            if status in ("failure", "timeout"):
                error_type = "timeout" if status == "timeout" else _error_type({"message": error})
                tel.increment("scheduler_job_errors_total", {"job_name": name, "error_type": error_type})
            run_at = _num(payload.get("runAtMs"))
            start = _ts(run_at, now)
            end = start + int((duration_ms or 0) * _MS)
            span = tel.job_span(name, job_id=job_id, trigger=str(payload.get("trigger") or "schedule"),
                                start_time=start).start()
            if next_run is not None:
                span.set("clawdbot.job.next_run_s", round(max(next_run / 1000 - end / _NS, 0.0), 3))
            if status == "success":
                span.set_status("success")
            else:
                span.set_status(status if status in ("failure", "timeout") else "failure",
                                str(error or status)[:500], "job")
            span.end(end)

    def _cron_list(self, payload: Mapping[str, Any], now: int) -> None:
        jobs = payload.get("jobs")
        if not isinstance(jobs, list):
            return
        for job in jobs[:200]:
            if not isinstance(job, dict) or not isinstance(job.get("id"), str):
                continue
            name = self._job_name(job["id"], job)
            state = job.get("state")
            next_run = _num(state.get("nextRunAtMs")) if isinstance(state, dict) else None
            if next_run is not None and job.get("enabled", True):
                self._set_next_run(name, next_run / 1000)

    def _set_next_run(self, name: str, at_s: float) -> None:
        if name in self._next_runs or len(self._next_runs) < 200:
            self._next_runs[name] = at_s

    # --- gauges, self-telemetry ------------------------------------------------------------------
    def _throughput_observation(self) -> Iterable[tuple[float, Mapping[str, Any] | None]]:
        return [(self.throughput(), None)]

    def _next_run_observations(self) -> Iterable[tuple[float, Mapping[str, Any] | None]]:
        now_s = self.clock() / _NS
        return [(max(at - now_s, 0.0), {"job_name": name}) for name, at in list(self._next_runs.items())]

    def _source_error(self, reason: str) -> None:
        self.telemetry.increment("clawdbot_otel_source_errors_total", {"source": "frames", "reason": reason})

    def _internal_error(self) -> None:
        """Called from an `except` block: strict (tests, development) re-raises, production counts."""
        if self.telemetry.strict:
            raise  # noqa: PLE0704 - re-raises the exception being handled by the caller
        self._source_error("observer_error")


def audit(telemetry: Telemetry, event: str, outcome: str, metadata: Mapping[str, Any]) -> None:
    """An authentication event: a `gateway` log line and a record on the audit channel (kept 1 year)."""
    level = "INFO" if outcome == "success" else "WARN"
    telemetry.log(level, "gateway", "Authentication succeeded" if outcome == "success" else "Authentication failed",
                  metadata={"event": event, **metadata})
    write_audit("auth", outcome=outcome, actor=metadata.get("client_id"), telemetry=telemetry,
                message=event, metadata=metadata)

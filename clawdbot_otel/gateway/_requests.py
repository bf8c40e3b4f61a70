"""Requests and responses: the gateway_* request metrics and a request span per req frame; the handshake
and configuration changes on the audit channel.

The tracing policy (CLAWDBOT_OTEL_UNTRACED_METHODS, a comma list, default `health`; empty: every request
traced): a request of such a method that succeeds makes no span, one that fails or times out keeps its
full span; every request is counted in the metrics all the same. Health probes are the bulk of a gateway's
requests and say nothing once they succeed (docs/request-tracing.md). The decision is taken at the
response: on the fast export path a span is data until it ends (`SpanScope.start`), so that an untraced
one costs next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from clawdbot_otel import SpanHandle, Telemetry
from clawdbot_otel import audit as write_audit
from clawdbot_otel.frames import RequestFrame, ResponseFrame

from ._automations import CronTracker
from ._observing import NS, STATUSES, Connection, Request, error_message, error_type_of, num, source_error
from ._runs import RunTracker

__all__ = ["DEFAULT_UNTRACED_METHODS", "UNTRACED_METHODS_ENV", "RequestTracker", "untraced_methods"]

UNTRACED_METHODS_ENV = "CLAWDBOT_OTEL_UNTRACED_METHODS"
DEFAULT_UNTRACED_METHODS = frozenset({"health"})

_WINDOW_S = 60
#: Methods that start an agent run and answer before it ends (the run is parented on their request span).
_RUN_STARTING_METHODS = frozenset({"chat.send", "sessions.send", "sessions.create", "sessions.steer"})
#: Methods that change the gateway's configuration: each goes to the audit channel.
_CONFIG_METHODS = frozenset({"config.set", "config.apply", "config.patch"})


class _Throughput:
    """Requests completed per second over the last minute: a ring of per-second counts."""

    __slots__ = ("_counts", "_secs")

    def __init__(self) -> None:
        self._counts = [0] * _WINDOW_S
        self._secs = [0] * _WINDOW_S

    def add(self, now_ns: int) -> None:
        sec = now_ns // NS
        idx = sec % _WINDOW_S
        if self._secs[idx] != sec:
            self._secs[idx] = sec
            self._counts[idx] = 0
        self._counts[idx] += 1

    def per_second(self, now_ns: int) -> float:
        now_s = now_ns // NS
        total = sum(c for c, s in zip(self._counts, self._secs, strict=True) if now_s - s < _WINDOW_S)
        return total / _WINDOW_S


def untraced_methods(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """CLAWDBOT_OTEL_UNTRACED_METHODS: the methods whose successful requests make no span (unset: `health`;
    set but empty: none, every request is traced)."""
    text = (os.environ if env is None else env).get(UNTRACED_METHODS_ENV)
    if text is None:
        return DEFAULT_UNTRACED_METHODS
    return frozenset(method.strip() for method in text.split(",") if method.strip())


class RequestTracker:
    """The connections and their pending requests. `agent` requests hand their run to `runs`;
    `cron.list` answers feed `cron` (None: the scheduler is instrumented elsewhere). `untraced`: the
    methods whose successful requests make no span (see the module docstring)."""

    def __init__(self, telemetry: Telemetry, runs: RunTracker, cron: CronTracker | None, *,
                 request_timeout_ns: int, max_requests: int, untraced: Collection[str] = DEFAULT_UNTRACED_METHODS,
                 ) -> None:
        self.telemetry = telemetry
        self.untraced = frozenset(untraced)
        self.runs = runs
        self.cron = cron
        self.request_timeout_ns = request_timeout_ns
        self.run_timeout_ns = runs.run_timeout_ns
        self.max_requests = max_requests
        self.count = 0
        self._conns: dict[str, Connection] = {}
        self._throughput = _Throughput()

    def opened(self, conn_id: str, headers: Mapping[str, str] | None) -> None:
        headers_json = None
        if headers:
            redacted = self.telemetry.redactor.mapping(headers)
            headers_json = orjson.dumps(redacted, default=str).decode()
        self._conns[conn_id] = Connection(conn_id, headers_json)

    def closed(self, conn_id: str, code: int | None, now: int) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        for req in list(conn.requests.values()):
            if req.id == conn.connect_id and not conn.auth_done:
                self._auth(conn, False, {"code": "CLOSED", "message": f"closed ({code}) before hello-ok"})
                self.end(req, now, "failure", "auth", "connection closed before hello-ok")
            else:
                self.end(req, now, "failure", "runtime", "connection closed")

    def sweep(self, now: int) -> int:
        ended = 0
        for conn in list(self._conns.values()):
            for req in [r for r in conn.requests.values() if r.deadline_ns <= now]:
                self.end(req, now, "timeout", "timeout", "no response")
                ended += 1
        return ended

    def close(self, now: int) -> None:
        for conn in list(self._conns.values()):
            for req in list(conn.requests.values()):
                self.end(req, now, "failure", "runtime", "gateway stopped before the response")

    def throughput(self, now_ns: int) -> float:
        return self._throughput.per_second(now_ns)

    def request(self, conn_id: str, frame: RequestFrame, now: int, ids: tuple[int, int] | None = None) -> SpanHandle:
        conn = self._conns.get(conn_id)
        if conn is None:
            conn = self._conns[conn_id] = Connection(conn_id, None)
        params = frame.params if isinstance(frame.params, dict) else None
        method = frame.method
        if method == "connect" and params is not None:
            client = params.get("client")
            if isinstance(client, dict) and isinstance(client.get("id"), str):
                conn.client_id = client["id"]
            conn.connect_id = frame.id
        span = self.telemetry.request_span(
            method, request_id=frame.id, body=params, connection_id=conn.id, client_id=conn.client_id,
            parent=frame.traceparent, start_time=now, ids=ids,
        ).start()
        if conn.headers_json is not None:
            span.set("clawdbot.request.headers", conn.headers_json)
        deadline = now + self.request_timeout_ns
        req = Request(self, conn, frame.id, method, span, start_ns=now, deadline_ns=deadline)
        if method == "agent" and params is not None:
            timeout_s = num(params.get("timeout"))
            req.deadline_ns = now + max(self.run_timeout_ns, int(((timeout_s or 0) + 60) * NS))
            key = params.get("idempotencyKey") or params.get("runId")
            if isinstance(key, str):
                self.runs.expect(key, req)
        elif method in _RUN_STARTING_METHODS and params is not None:
            key = params.get("idempotencyKey")
            if isinstance(key, str):  # OpenClaw uses it as the run id of the turn it starts
                self.runs.set_parent(key, span)
        old = conn.requests.get(frame.id)
        if old is not None:  # a reused id: the earlier request will never get its response
            self.end(old, now, "failure", "protocol", "request id reused")
        conn.requests[frame.id] = req
        self.count += 1
        if self.count > self.max_requests:
            self._evict_oldest(now)
        return span

    def response(self, conn_id: str, frame: ResponseFrame, now: int) -> None:
        conn = self._conns.get(conn_id)
        req = conn.requests.get(frame.id) if conn is not None else None
        if req is None or conn is None:
            return  # a response to something we did not see (or already ended)
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if req.id == conn.connect_id and not conn.auth_done:
            ok = frame.ok and payload.get("type") == "hello-ok"
            self._auth(conn, ok, frame.error, payload.get("auth"))
            if ok:
                self.end(req, now, "success")
            else:
                self.end(req, now, "failure", "auth", error_message(frame.error))
            return
        if req.method == "agent":
            outcome = self.runs.agent_response(req, frame, payload, now)
            if outcome is not None:
                self.end(req, now, *outcome)
            return
        if req.method in _CONFIG_METHODS:
            self._config_change(req, frame)
        if frame.ok:
            if self.cron is not None and req.method == "cron.list":
                self.cron.job_list(payload, now)
            if req.method in _RUN_STARTING_METHODS and isinstance(payload.get("runId"), str):
                self.runs.set_parent(payload["runId"], req.span)
            self.end(req, now, "success")
        else:
            error_type = error_type_of(frame.error)
            status = "timeout" if error_type == "timeout" else "failure"
            self.end(req, now, status, error_type, error_message(frame.error))

    def end(self, req: Request, now: int, status: str, error_type: str | None = None,
                     message: str | None = None) -> None:
        conn = req.conn
        if conn.requests.pop(req.id, None) is None:
            return
        self.count -= 1
        self.runs.request_ended(req)
        end = max(now, req.start_ns)
        span = req.span
        if status == "success":
            if req.method in self.untraced:
                span.discard()
            else:
                span.set_status("success")
                span.end(end)
        else:
            span.set_status(status if status in STATUSES else "failure", message,
                            error_type if status != "timeout" else "timeout")
            span.end(end)
        tel = self.telemetry
        tel.increment("gateway_requests_total", {"method": req.label, "status": status})
        tel.histogram("gateway_request_latency_seconds", (end - req.start_ns) / NS, {"method": req.label})
        if error_type is not None:
            tel.increment("gateway_errors_total", {"error_type": error_type})
        self._throughput.add(now)


    def _config_change(self, req: Request, frame: ResponseFrame) -> None:
        """config.set/apply/patch through the gateway: an audit record with who and whether it applied."""
        conn = req.conn
        metadata: dict[str, Any] = {"method": req.method, "request_id": req.id, "connection_id": conn.id,
                                    "client_id": conn.client_id}
        if not frame.ok:
            metadata["error"] = error_message(frame.error)
        write_audit("config.change", outcome="success" if frame.ok else "failure", actor=conn.client_id,
                    telemetry=self.telemetry, metadata=metadata)

    def _evict_oldest(self, now: int) -> None:
        oldest: Request | None = None
        for conn in self._conns.values():
            for req in conn.requests.values():
                if oldest is None or req.start_ns < oldest.start_ns:
                    oldest = req
                break  # dicts keep insertion order: the first is the connection's oldest
        if oldest is not None:
            source_error(self.telemetry, "request_overflow")
            self.end(oldest, now, "timeout", "timeout", "evicted: too many pending requests")

    def _auth(self, conn: Connection, ok: bool, error: Mapping[str, Any] | None,
              auth: Any = None) -> None:
        conn.auth_done = True
        metadata: dict[str, Any] = {"connection_id": conn.id, "client_id": conn.client_id}
        if isinstance(auth, dict):
            metadata.update({"auth_method": auth.get("method"), "role": auth.get("role"),
                             "scopes": auth.get("scopes")})
        if ok:
            _audit_auth(self.telemetry, "auth.success", "success", metadata)
        else:
            metadata["error"] = error_message(error)
            _audit_auth(self.telemetry, "auth.failure", "failure", metadata)


def _audit_auth(telemetry: Telemetry, event: str, outcome: str, metadata: Mapping[str, Any]) -> None:
    """An authentication event: a `gateway` log line and a record on the audit channel (kept 1 year)."""
    level = "INFO" if outcome == "success" else "WARN"
    telemetry.log(level, "gateway", "Authentication succeeded" if outcome == "success" else "Authentication failed",
                  metadata={"event": event, **metadata})
    write_audit("auth", outcome=outcome, actor=metadata.get("client_id"), telemetry=telemetry,
                message=event, metadata=metadata)

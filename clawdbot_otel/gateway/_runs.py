"""Agent runs -> spans: one trace per run, from the `agent` events and the final res of the `agent` req.

    request  gateway.request agent          (the client's `agent` req -> its final res)
    └── session  invoke_agent main          (lifecycle start -> lifecycle end; GenAI usage and cost)
        ├── model_call  chat <model>        (lifecycle `model` phase -> next model phase / finishing)
        └── tool_call   execute_tool <name> (stream item kind tool: start -> end)

Runs that never finish are ended by `sweep()` with status timeout, at their last frame.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from clawdbot_otel import SpanHandle, Telemetry, model_family, session_type
from clawdbot_otel.conventions import OTHER
from clawdbot_otel.frames import ResponseFrame

from ._observing import LRU, NS, Request, error_message, error_type_of, frame_ns, num, source_error

__all__ = ["Run", "RunTracker"]

_TOOL_OK = frozenset({"completed", "complete", "ok", "success", "succeeded", "done"})
_TOOL_TIMEOUT = frozenset({"timeout", "timed_out", "timedout"})


class Run:
    __slots__ = (
        "active_counted", "agent_id", "cost_usd", "deadline_ns", "end_ns", "error_message", "error_type",
        "id", "last_ns", "last_seq", "model", "model_call", "output_base", "output_tokens", "provider", "request",
        "response_model", "session", "session_key", "start_ns", "stop_reason", "subagent_counted", "tools",
        "type", "usage",
    )

    def __init__(self, run_id: str, request: Request | None, deadline_ns: int) -> None:
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


class RunTracker:
    """The open agent runs, their session, model-call and tool-call spans, and the session_* metrics."""

    def __init__(self, telemetry: Telemetry, *, run_timeout_ns: int, finish_grace_ns: int, max_runs: int,
                 count_subagents: bool) -> None:
        self.telemetry = telemetry
        self.run_timeout_ns = run_timeout_ns
        self.finish_grace_ns = finish_grace_ns
        self.max_runs = max_runs
        self.count_subagents = count_subagents
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._requests: dict[str, Request] = {}  # run id / idempotency key -> the agent req
        self._finished = LRU(4096)
        # run id -> the request span of the call that started it (chat.send, sessions.send answer at
        # once; the run goes on after the request span ended and is parented on it all the same)
        self._parents: OrderedDict[str, trace.NonRecordingSpan] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def expect(self, key: str, req: Request) -> None:
        """An `agent` req whose run will carry `key` (its idempotency key or run id)."""
        req.run_key = key
        self._requests[key] = req

    def request_ended(self, req: Request) -> None:
        if req.run_key is None:
            return
        if self._requests.get(req.run_key) is req:
            del self._requests[req.run_key]
        run = self._runs.get(req.run_key)
        if run is not None and run.request is req:
            run.request = None  # the run goes on; it is finished by its own frames or the sweep

    def counted(self, run_id: str) -> bool:
        """Whether this run finished here with its tokens and cost counted."""
        return run_id in self._finished

    def session_of(self, run_id: str) -> SpanHandle | None:
        run = self._runs.get(run_id)
        return run.session if run is not None else None

    def sweep(self, now: int) -> int:
        expired = [r for r in self._runs.values() if r.deadline_ns <= now]
        for run in expired:
            if run.end_ns is not None:
                self._finish_run(run, now)
            else:
                self._timeout_run(run, now)
        return len(expired)

    def close(self, now: int) -> None:
        for run in list(self._runs.values()):
            if run.end_ns is not None:
                self._finish_run(run, now)
            else:
                self._timeout_run(run, now, "gateway stopped before the run finished")

    def agent_response(self, req: Request, frame: ResponseFrame, payload: Mapping[str, Any],
                       now: int) -> tuple[str, str | None, str | None] | None:
        """The `agent` req's res: None while the run goes on (accepted), else how the request ends
        (status, error_type, message), the run finished with the usage and cost it carries."""
        run_id = payload.get("runId") if isinstance(payload.get("runId"), str) else req.run_key
        if frame.ok and payload.get("status") == "accepted":
            if isinstance(run_id, str):
                if req.run_key and req.run_key != run_id:
                    self._requests.pop(req.run_key, None)
                req.run_key = run_id
                self._requests[run_id] = req
                run = self._runs.get(run_id)
                if run is not None and run.request is None:
                    run.request = req
            return None
        run = self._runs.get(run_id) if isinstance(run_id, str) else None
        if frame.ok:
            status_word = str(payload.get("status") or "ok")
            status = {"ok": "success", "completed": "success", "timeout": "timeout"}.get(status_word, "failure")
            error_type = None if status == "success" else ("timeout" if status == "timeout" else "runtime")
            message = None if status == "success" else str(payload.get("summary") or status_word)
        else:
            error_type = error_type_of(frame.error)
            status = "timeout" if error_type == "timeout" else "failure"
            message = error_message(frame.error)
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
        return status, error_type, message

    def set_parent(self, run_id: str, span: SpanHandle) -> None:
        parents = self._parents
        parents[run_id] = trace.NonRecordingSpan(span.span.get_span_context())  # the ids, not the whole span
        if len(parents) > 1024:
            parents.popitem(last=False)

    def event(self, payload: Mapping[str, Any], now: int) -> None:
        run_id = payload.get("runId")
        data = payload.get("data")
        if not isinstance(run_id, str) or not isinstance(data, dict):
            source_error(self.telemetry, "agent_event_shape")
            return
        run = self._runs.get(run_id)
        if run is None:
            if run_id in self._requests or run_id not in self._finished:
                run = self._new_run(run_id, now)
            else:
                return  # a late event of a run already finished
        seq = payload.get("seq")
        if isinstance(seq, int):
            if run.last_seq is not None and seq <= run.last_seq:
                return  # the same event seen on another connection
            run.last_seq = seq
        ts = frame_ns(payload.get("ts"), now)
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
            out = num(data.get("outputTokens"))
            if out is not None and out >= run.output_tokens:
                run.output_tokens = int(out)

    def _new_run(self, run_id: str, now: int) -> Run:
        req = self._requests.get(run_id)
        deadline = req.deadline_ns if req is not None else now + self.run_timeout_ns
        run = Run(run_id, req, deadline)
        self._runs[run_id] = run
        if len(self._runs) > self.max_runs:
            _, oldest = next(iter(self._runs.items()))
            source_error(self.telemetry, "run_overflow")
            self._timeout_run(oldest, now)
        return run

    def _ensure_session(self, run: Run, ts: int) -> SpanHandle:
        if run.session is None:
            parent = run.request.span if run.request is not None else self._parents.pop(run.id, None)
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

    def _lifecycle(self, run: Run, data: Mapping[str, Any], ts: int, now: int) -> None:
        phase = data.get("phase")
        if phase == "start":
            self._ensure_session(run, frame_ns(data.get("startedAt"), ts))
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
            end = frame_ns(data.get("endedAt"), ts)
            error = data.get("error")
            if isinstance(data.get("stopReason"), str):
                run.stop_reason = data["stopReason"]
            self._end_model_call(run, end, str(error) if error else None)
        elif phase in ("end", "error"):
            end = frame_ns(data.get("endedAt"), ts)
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

    def _end_model_call(self, run: Run, end: int, error: str | None) -> None:
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

    def _tool_item(self, run: Run, data: Mapping[str, Any], ts: int) -> None:
        call_id = data.get("toolCallId") or data.get("itemId")
        if not isinstance(call_id, str):
            source_error(self.telemetry, "tool_item_shape")
            return
        phase = data.get("phase")
        raw_name = data.get("name")
        name = raw_name if isinstance(raw_name, str) and raw_name else "unknown"
        if phase == "start":
            if call_id in run.tools:
                return
            session = self._ensure_session(run, ts)
            start = frame_ns(data.get("startedAt"), ts)
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
            self._end_tool(run, call_id, frame_ns(data.get("endedAt"), ts), status, message)

    def _end_tool(self, run: Run, call_id: str, end: int, status: str, message: str | None) -> None:
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

    def _apply_agent_meta(self, run: Run, meta: Mapping[str, Any]) -> None:
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
            if isinstance(cost, dict) and num(cost.get("total")) is not None:
                run.cost_usd = num(cost.get("total"))
        if num(meta.get("costUsd")) is not None:
            run.cost_usd = num(meta.get("costUsd"))

    def _finish_run(self, run: Run, now: int, status: str | None = None,
                    timeout_message: str = "run did not finish in time") -> None:
        if self._runs.pop(run.id, None) is None:
            return
        self._finished.add(run.id)
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
        tokens = {"input": num(usage.get("input")), "output": num(usage.get("output")),
                  "cache_read": num(usage.get("cacheRead")), "cache_write": num(usage.get("cacheWrite"))}
        for token_type, count in tokens.items():
            if count:
                tel.increment("session_tokens_used", {"model": family, "token_type": token_type}, count)
        total = num(usage.get("total")) or sum(c for c in tokens.values() if c)
        if run.cost_usd:
            tel.increment("session_cost_usd_total", {"model": family}, run.cost_usd)
        duration_s = (end - run.start_ns) / NS
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

    def _timeout_run(self, run: Run, now: int, message: str = "run did not finish in time") -> None:
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
            req.owner.end(req, now, "timeout", "timeout", message)


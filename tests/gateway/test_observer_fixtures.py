"""FrameObserver over the real OpenClaw captures: trace structure, GenAI attributes, metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from clawdbot_otel.frames import frame_from_dict
from clawdbot_otel.gateway import FrameObserver
from clawdbot_otel.testing import Capture, capture_telemetry

from .replay import records, replay

_NS = 1_000_000_000


def _final_agent_meta(name: str) -> list[dict[str, Any]]:
    out = []
    for rec in records(name):
        payload = rec["frame"].get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("result"), dict):
            out.append(payload["result"]["meta"]["agentMeta"])
    return out


def _points(cap: Capture, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    return {tuple(sorted(p.attributes.items())): p.value for p in cap.metric_points(name)}


def _by_id(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def _cat(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get("clawdbot.span.category"))


@pytest.fixture
def cap() -> Any:
    with capture_telemetry() as capture:
        yield capture


def test_plain_turns_one_trace_per_run(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    replay(observer, "agent-turn-plain.jsonl")
    sessions = cap.spans_by_category("session")
    assert len(sessions) == 2
    requests = [s for s in cap.spans_by_category("request") if s.attributes["rpc.method"] == "agent"]
    assert len(requests) == 2
    spans = _by_id(cap.finished_spans())
    for session in sessions:
        parent = spans[session.parent.span_id]  # type: ignore[union-attr]
        assert _cat(parent) == "request"
        assert parent.attributes["rpc.method"] == "agent"
        assert parent.context.trace_id == session.context.trace_id
        trace = [s for s in spans.values() if s.context.trace_id == session.context.trace_id]
        assert Counter(_cat(s) for s in trace) == {"request": 1, "session": 1, "model_call": 1}
        model_call = next(s for s in trace if _cat(s) == "model_call")
        assert model_call.parent.span_id == session.context.span_id  # type: ignore[union-attr]
        assert model_call.attributes["gen_ai.request.model"] == "fake-sonnet"
        assert model_call.attributes["gen_ai.usage.output_tokens"] == 12
        assert session.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert session.attributes["gen_ai.agent.name"] == "main"
        assert session.attributes["gen_ai.provider.name"] == "fake"
        assert session.attributes["gen_ai.request.model"] == "fake-sonnet"
        assert session.attributes["gen_ai.usage.input_tokens"] == 1200
        assert session.attributes["gen_ai.usage.output_tokens"] == 12
        assert session.attributes["clawdbot.session.cost_usd"] == pytest.approx(0.00378)
        assert session.attributes["clawdbot.session.type"] == "main"
        assert session.status.status_code is StatusCode.OK
        # span times come from the frames' own timestamps (lifecycle startedAt / endedAt)
        assert session.start_time is not None and session.end_time is not None
        assert session.start_time % 1_000_000 == 0
        assert parent.start_time <= session.start_time <= session.end_time <= parent.end_time  # type: ignore[operator]
    # the two CLI calls are separate traces
    assert len({s.context.trace_id for s in sessions}) == 2
    # connect requests are their own, successful traces
    connects = [s for s in cap.spans_by_category("request") if s.attributes["rpc.method"] == "connect"]
    assert len(connects) == 2 and all(s.status.status_code is StatusCode.OK for s in connects)
    assert all("secret-token" not in str(s.attributes.get("clawdbot.request.headers")) for s in connects)


def test_token_and_cost_metrics_equal_agent_meta(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    for name in ("agent-turn-plain.jsonl", "agent-turn-tool-call.jsonl"):
        replay(observer, name)
    metas = _final_agent_meta("agent-turn-plain.jsonl") + _final_agent_meta("agent-turn-tool-call.jsonl")
    tokens = _points(cap, "session.tokens_used")
    expected_input = sum(m["usage"]["input"] for m in metas)
    expected_output = sum(m["usage"]["output"] for m in metas)
    assert tokens[(("model", "sonnet"), ("token_type", "input"))] == expected_input
    assert tokens[(("model", "sonnet"), ("token_type", "output"))] == expected_output
    cost = _points(cap, "session.cost_usd")
    assert cost[(("model", "sonnet"),)] == pytest.approx(sum(m["costUsd"] for m in metas))
    sessions = _points(cap, "session")
    assert sessions[(("model", "sonnet"), ("type", "main"))] == 3
    active = _points(cap, "session.active")
    assert active[(("type", "main"),)] == 0
    requests = _points(cap, "gateway.requests")
    assert requests[(("method", "agent"), ("status", "success"))] == 3
    assert requests[(("method", "connect"), ("status", "success"))] == 3
    durations = {p.attributes["type"]: p.count for p in cap.metric_points("session.duration")}
    assert durations == {"main": 3}


def test_tool_call_span(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    replay(observer, "agent-turn-tool-call.jsonl")
    (tool,) = cap.spans_by_category("tool_call")
    (session,) = cap.spans_by_category("session")
    assert tool.parent.span_id == session.context.span_id  # type: ignore[union-attr]
    assert tool.context.trace_id == session.context.trace_id
    assert tool.name == "execute_tool ls"
    assert tool.attributes["gen_ai.tool.name"] == "ls"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_b232aade"
    assert tool.attributes["clawdbot.status"] == "success"
    assert (tool.end_time - tool.start_time) == 34 * 1_000_000  # type: ignore[operator]  # startedAt..endedAt
    model_calls = cap.spans_by_category("model_call")
    assert len(model_calls) == 2
    assert sorted(m.attributes.get("gen_ai.usage.output_tokens", 0) for m in model_calls) == [5, 12]
    assert session.attributes["gen_ai.usage.input_tokens"] == 2100
    assert session.attributes["gen_ai.usage.output_tokens"] == 17
    calls = _points(cap, "session.tool_calls")
    assert calls == {(("status", "success"), ("tool_name", "ls")): 1}


def test_model_error_capture(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry, run_timeout_s=60)
    last = replay(observer, "agent-turns-model-error.jsonl", close=False)
    assert observer.open_runs == 1  # the failing run never ended: the CLI gave up
    assert observer.sweep(last + 3600 * _NS) >= 1
    assert observer.open_runs == 0 and observer.open_requests == 0
    failing = [s for s in cap.spans_by_category("model_call") if s.status.status_code is StatusCode.ERROR]
    assert len(failing) == 6
    for span in failing:
        assert span.attributes["error.type"] == "model"
        assert "overloaded" in (span.status.description or "")
    sessions = cap.spans_by_category("session")
    assert len(sessions) == 2
    failed = next(s for s in sessions if s.attributes["clawdbot.session.key"] == "agent:main:errtest")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["clawdbot.status"] == "timeout"
    assert all(s.context.trace_id == failed.context.trace_id for s in failing)
    errors = _points(cap, "session.errors")
    assert errors[(("error_type", "model"),)] == 6
    assert errors[(("error_type", "timeout"),)] == 1
    requests = _points(cap, "gateway.requests")
    assert requests[(("method", "agent"), ("status", "timeout"))] == 1
    assert requests[(("method", "agent"), ("status", "success"))] == 1


def test_incoming_traceparent_parents_the_run(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    observer.connection_opened("c1")
    frame = frame_from_dict({"type": "req", "id": "r1", "method": "agent", "traceparent": parent,
                             "params": {"message": "hi", "idempotencyKey": "run-1"}})
    handle = observer.request("c1", frame, 1_000 * _NS)
    assert handle is not None and handle.trace_id == "0af7651916cd43dd8448eb211c80319c"
    events = [
        {"stream": "lifecycle", "data": {"phase": "start"}},
        {"stream": "lifecycle", "data": {"phase": "model", "provider": "anthropic", "model": "claude-opus-4-5"}},
        {"stream": "lifecycle", "data": {"phase": "end"}},
    ]
    for seq, ev in enumerate(events, 1):
        payload = {"runId": "run-1", "sessionKey": "agent:main:main", "agentId": "main", "seq": seq, **ev}
        observer.frame("c1", "s2c", frame_from_dict({"type": "event", "event": "agent", "payload": payload}),
                       (1_000 + seq) * _NS)
    observer.frame("c1", "s2c", frame_from_dict({"type": "res", "id": "r1", "ok": True,
                                                 "payload": {"runId": "run-1", "status": "ok"}}), 1_010 * _NS)
    spans = cap.finished_spans()
    assert {s.context.trace_id for s in spans} == {0x0AF7651916CD43DD8448EB211C80319C}
    assert {_cat(s) for s in spans} == {"request", "session", "model_call"}


def test_duplicate_events_count_once(cap: Capture) -> None:
    """A broadcast reaches every connection: the same agent event seen twice is one event."""
    observer = FrameObserver(cap.telemetry)
    for conn in ("a", "b"):
        observer.connection_opened(conn)
    for seq, data in enumerate([{"phase": "start"}, {"phase": "model", "model": "claude-haiku-4-5"},
                                {"phase": "end"}], 1):
        payload = {"runId": "cron-run", "sessionKey": "cron:nightly", "agentId": "main", "seq": seq,
                   "stream": "lifecycle", "data": data}
        for conn in ("a", "b"):
            observer.frame(conn, "s2c", frame_from_dict({"type": "event", "event": "agent", "payload": payload}))
    (session,) = cap.spans_by_category("session")
    assert session.parent is None  # not started by a request we saw: its own trace
    assert _points(cap, "session") == {(("model", "haiku"), ("type", "cron")): 1}


def test_cron_and_task_events(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("c")
    now_ms = 1_800_000_000_000
    frames = [
        {"type": "event", "event": "cron", "payload": {"jobId": "j1", "jobName": "coordinator", "action": "started",
                                                       "runAtMs": now_ms}},
        {"type": "event", "event": "cron", "payload": {"jobId": "j1", "jobName": "coordinator", "action": "finished",
                                                       "status": "error", "error": "boom", "runAtMs": now_ms,
                                                       "durationMs": 1500, "nextRunAtMs": now_ms + 60_000}},
        {"type": "event", "event": "task", "payload": {"action": "upserted", "task": {
            "id": "t1", "status": "completed", "kind": "cron", "createdAt": now_ms - 1000, "startedAt": now_ms,
            "endedAt": now_ms + 2000,
            "validation": [{"layer": "L1", "result": "pass", "at": now_ms + 2000},
                           {"layer": "L2", "result": "fail", "reason": "missing_evidence", "at": now_ms + 2000}]}}},
    ]
    for frame in frames * 2:  # duplicates count once
        observer.frame("c", "s2c", frame_from_dict(frame), now_ms * 1_000_000)
    assert _points(cap, "scheduler.jobs") == {(("job_name", "coordinator"), ("status", "failure")): 1}
    assert _points(cap, "scheduler.job.errors") == {(("error_type", "runtime"), ("job_name", "coordinator")): 1}
    assert _points(cap, "scheduler.jobs.active") == {(): 0}
    (next_run,) = cap.metric_points("scheduler.next_run")
    assert next_run.attributes == {"job_name": "coordinator"}
    (job,) = cap.spans_by_category("job")
    assert job.status.status_code is StatusCode.ERROR
    assert (job.end_time - job.start_time) == 1500 * 1_000_000  # type: ignore[operator]
    assert _points(cap, "task.completion") == {(("phase", "cron"), ("status", "success")): 1}
    assert _points(cap, "task.validation.passes") == {(("layer", "L1"),): 1}
    assert _points(cap, "task.validation.failures") == {(("layer", "L2"), ("reason", "missing_evidence")): 1}
    assert len(cap.spans_by_category("validation")) == 2


def test_auth_events_and_invalid_frames(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("good")
    observer.connection_opened("bad")
    connect = {"type": "req", "id": "1", "method": "connect",
               "params": {"client": {"id": "cli"}, "auth": {"token": "s3cret"}}}
    for conn in ("good", "bad"):
        observer.request(conn, frame_from_dict(connect))  # type: ignore[arg-type]
    observer.frame("good", "s2c", frame_from_dict({"type": "res", "id": "1", "ok": True, "payload": {
        "type": "hello-ok", "auth": {"method": "token", "role": "operator", "scopes": ["operator.write"]}}}))
    observer.frame("bad", "s2c", frame_from_dict({"type": "res", "id": "1", "ok": False, "error": {
        "code": "INVALID_REQUEST", "message": "unauthorized: gateway token mismatch"}}))
    observer.invalid("c2s", "invalid_json")
    assert _points(cap, "gateway.errors") == {(("error_type", "auth"),): 1, (("error_type", "protocol"),): 1}
    assert _points(cap, "clawdbot_otel.source_errors") == {(("reason", "invalid_json"), ("source", "frames")): 1}
    audit = [line for line in cap.log_lines() if line["component"] == "audit"]
    assert [line["message"] for line in audit] == ["auth.success", "auth.failure"]
    assert "s3cret" not in str(cap.log_lines())
    assert audit[0]["metadata"]["role"] == "operator"


def test_unanswered_requests_expire(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry, request_timeout_s=5)
    observer.connection_opened("c")
    observer.request("c", frame_from_dict({"type": "req", "id": "9", "method": "health"}), 1 * _NS)  # type: ignore[arg-type]
    assert observer.sweep(3 * _NS) == 0
    assert observer.sweep(7 * _NS) == 1
    assert _points(cap, "gateway.requests") == {(("method", "health"), ("status", "timeout")): 1}
    (span,) = cap.spans_by_category("request")
    assert span.attributes["clawdbot.status"] == "timeout"


def test_session_logs_carry_the_session_spans_ids(cap: Capture) -> None:
    """A log about a run is findable from its trace (log store -> Jaeger) even though the observer is not
    inside the span when it logs."""
    observer = FrameObserver(cap.telemetry)
    replay(observer, "agent-turn-plain.jsonl")
    sessions = {format(s.context.span_id, "016x"): format(s.context.trace_id, "032x")
                for s in cap.spans_by_category("session")}
    logged = [r for r in cap.log_lines() if r["message"] in ("Session completed", "Session failed")]
    assert len(logged) == 2
    for record in logged:
        assert sessions[record["span_id"]] == record["trace_id"]

"""The embedded gateway over a real WebSocket: handshake, agent turns shaped like the captures, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.simulation import CronJob, GatewayClient, GatewayError
from clawdbot_otel.testing import Capture, capture_telemetry

from .replay import records

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-token"


def _keys(name: str, pick: Any) -> set[str]:
    out: set[str] = set()
    for rec in records(name):
        value = pick(rec["frame"])
        if isinstance(value, dict):
            out |= set(value)
    return out


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[GatewayServer, Capture]]:
    with capture_telemetry() as cap:
        server = GatewayServer(cap.telemetry, port=0, workspace=tmp_path / "clawd", token=TOKEN, time_scale=0.01,
                               tick_interval_s=0.2, cron_jobs=(), seed=7, collectors=False)
        async with server:
            yield server, cap
        assert server.observer_errors == []


async def test_handshake_and_agent_turn_shapes(gateway: tuple[GatewayServer, Capture]) -> None:
    server, cap = gateway
    events: list[dict[str, Any]] = []
    async with GatewayClient(server.url, token=TOKEN, on_event=events.append) as client:
        hello = client.hello
        assert hello is not None and hello["type"] == "hello-ok" and hello["protocol"] == 4
        assert hello["auth"]["role"] == "operator"
        final = await client.agent("please use a tool now")
        await client.call("health")
    assert final["status"] == "ok"
    meta = final["result"]["meta"]["agentMeta"]
    assert set(meta["usage"]) == {"input", "output", "cacheRead", "cacheWrite", "total", "cost"}
    assert meta["model"] == "claude-sonnet-4-5" and meta["provider"] == "anthropic"
    assert meta["costUsd"] == meta["usage"]["cost"]["total"] > 0
    agent = [e["payload"] for e in events if e.get("event") == "agent"]
    streams = {p["stream"] for p in agent}
    assert {"lifecycle", "item", "usage", "assistant"} <= streams
    phases = [p["data"]["phase"] for p in agent if p["stream"] == "lifecycle"]
    assert phases[0] == "start" and phases[-1] == "end" and "finishing" in phases and "model" in phases
    # the same keys as the real gateway's frames
    real_item = _keys("agent-turn-tool-call.jsonl",
                      lambda f: f.get("payload", {}).get("data") if f.get("payload", {}).get("stream") == "item"
                      else None)
    ours_item = {k for p in agent if p["stream"] == "item" for k in p["data"]}
    assert ours_item == real_item  # this tool call completed: no error fields
    real_end = _keys("agent-turn-tool-call.jsonl",
                     lambda f: f["payload"]["data"] if f.get("payload", {}).get("stream") == "lifecycle"
                     and f["payload"]["data"].get("phase") == "end" else None)
    (ours_end,) = [p["data"] for p in agent if p["stream"] == "lifecycle" and p["data"]["phase"] == "end"]
    assert set(ours_end) == real_end
    assert ours_end["terminalReply"]["text"] == final["result"]["payloads"][0]["text"]
    assert set(ours_end["terminalReceipt"]) == {
        "runId", "sessionId", "turnId", "requested", "effective", "successfulToolNames", "rerouted",
        "terminalDisposition"}
    assert {"runId", "sessionKey", "agentId", "stream", "data", "seq", "ts"} <= set(agent[0])
    assert any(e.get("event") == "chat" and e["payload"]["state"] == "final" for e in events)
    assert any(e.get("event") == "task" and e["payload"]["task"]["status"] == "completed" for e in events)
    assert all(isinstance(e.get("seq"), int) for e in events
               if e.get("type") == "event" and e["event"] != "connect.challenge")  # as the captures
    # telemetry: one trace request -> session -> model_call/tool_call
    await asyncio.sleep(0.05)
    (session,) = cap.spans_by_category("session")
    request = next(s for s in cap.spans_by_category("request") if s.attributes["rpc.method"] == "agent")
    assert session.parent.span_id == request.context.span_id  # type: ignore[union-attr]
    (tool,) = cap.spans_by_category("tool_call")
    assert tool.parent.span_id == session.context.span_id  # type: ignore[union-attr]
    assert len(cap.spans_by_category("model_call")) == 2
    assert session.attributes["gen_ai.usage.input_tokens"] == meta["usage"]["input"]
    assert session.attributes["clawdbot.session.cost_usd"] == pytest.approx(meta["costUsd"])


async def test_invalid_frames_get_protocol_errors(gateway: tuple[GatewayServer, Capture]) -> None:
    server, cap = gateway
    unsolicited: list[dict[str, Any]] = []
    async with GatewayClient(server.url, token=TOKEN, on_event=unsolicited.append) as client:
        await client.send_raw("this is not json")
        await client.send_raw(orjson.dumps({"id": "x1", "method": "health"}).decode())
        await client.send_raw(b"\x00\x01binary")
        with pytest.raises(GatewayError) as info:
            await client.call("no.such.method")
        assert info.value.code == "INVALID_REQUEST" and "unknown method" in info.value.message
        health = await client.call("health")  # still serving
        assert health["ok"] is True
    errors = [f for f in unsolicited if f.get("type") == "res" and f.get("ok") is False]
    assert len(errors) == 3
    assert all(f["error"]["code"] == "INVALID_REQUEST" for f in errors)
    assert [f["id"] for f in errors] == ["", "x1", ""]
    await asyncio.sleep(0.05)
    reasons = {p.attributes["reason"]: p.value for p in cap.metric_points("clawdbot_otel.source_errors")}
    assert reasons == {"invalid_json": 2, "missing_type": 1}
    gateway_errors = {p.attributes["error_type"]: p.value for p in cap.metric_points("gateway.errors")}
    assert gateway_errors["protocol"] == 4  # three bad frames + the unknown method


async def test_bad_token_is_refused_and_audited(gateway: tuple[GatewayServer, Capture]) -> None:
    server, cap = gateway
    client = GatewayClient(server.url, token="wrong")
    with pytest.raises(GatewayError, match="unauthorized"):
        await client.connect()
    await client.close()
    async with GatewayClient(server.url, token=TOKEN):
        pass
    for _ in range(100):
        if not server.peers:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    audit = [line["metadata"] for line in cap.log_lines() if line["component"] == "audit"]
    assert sorted((m["action"], m["outcome"]) for m in audit) == [("auth", "failure"), ("auth", "success")]
    errors = {p.attributes["error_type"]: p.value for p in cap.metric_points("gateway.errors")}
    assert errors == {"auth": 1}
    connections = cap.metric_points("gateway.active_connections")
    assert connections[0].value == 0


async def test_model_error_spawn_inbox_and_cron(tmp_path: Path) -> None:
    with capture_telemetry() as cap:
        jobs = (CronJob("nightly", "nightly-report", 3600.0, "nightly report: use a tool"),)
        server = GatewayServer(cap.telemetry, port=0, workspace=tmp_path / "clawd", time_scale=0.01, cron_jobs=jobs,
                               seed=3, collectors=True, tick_interval_s=0.2)
        async with server:
            async with GatewayClient(server.url) as client:
                with pytest.raises(GatewayError):
                    await client.agent("please fail the model")
                await client.agent("spawn a helper and message builder")
                ran = await client.call("cron.run", {"id": "nightly"})
                assert ran["ran"] is True
                for _ in range(200):
                    runs = await client.call("cron.runs", {"id": "nightly"})
                    if runs["entries"]:
                        break
                    await asyncio.sleep(0.02)
                jobs_list = await client.call("cron.list")
                assert jobs_list["jobs"][0]["state"]["lastStatus"] in ("ok", "error")
                sessions = await client.call("sessions.list")
                assert any(":subagent:" in s["key"] for s in sessions["sessions"])
                await client.call("sessions.usage")
            for _ in range(100):  # the watchers poll every 0.5 s
                if cap.metric_points("spawn.subagent") and cap.metric_points("inbox.messages"):
                    break
                await asyncio.sleep(0.1)
        assert server.observer_errors == []
        failing = [s for s in cap.spans_by_category("model_call") if s.status.status_code is StatusCode.ERROR]
        assert len(failing) == 3
        assert any(p.attributes == {"error_type": "model"} and p.value == 3
                   for p in cap.metric_points("session.errors"))
        assert {p.attributes["type"] for p in cap.metric_points("session")} >= {"main", "subagent", "cron"}
        assert [p.value for p in cap.metric_points("spawn.subagent")] == [1]  # counted once (by the watcher)
        assert cap.metric_points("spawn.requests")
        assert cap.metric_points("inbox.messages")
        assert next(p.attributes for p in cap.metric_points("scheduler.jobs"))["job_name"] == "nightly-report"
        assert cap.spans_by_category("job") and cap.spans_by_category("spawn")
        assert cap.metric_points("task.validation.passes")
        assert any((tmp_path / "clawd" / "scheduler" / "spawn-queue" / "responses").iterdir())


async def test_retry_frames_match_the_captures(gateway: tuple[GatewayServer, Capture]) -> None:
    server, _ = gateway
    events: list[dict[str, Any]] = []
    async with GatewayClient(server.url, token=TOKEN, on_event=events.append) as client:
        await client.agent("flaky provider, answer anyway")
    agent = [e["payload"] for e in events if e.get("event") == "agent"]
    (retry,) = [p["data"] for p in agent if p["stream"] == "run_status"]
    assert set(retry) == _keys("agent-turns-model-error.jsonl",
                               lambda f: f.get("payload", {}).get("data")
                               if f.get("payload", {}).get("stream") == "run_status" else None)
    assert retry["message"] == "Provider temporarily unavailable. Retrying in 1s (1/2)."
    # after the failed attempt, its reply is cleared (replace), as the real gateway does before retrying
    streams = [(p["stream"], p["data"].get("phase"), p["data"].get("replace")) for p in agent]
    assert streams[streams.index(("run_status", "retrying", None)) + 1] == ("assistant", None, True)


async def test_challenge_matches_the_captures(gateway: tuple[GatewayServer, Capture]) -> None:
    server, _ = gateway
    events: list[dict[str, Any]] = []
    async with GatewayClient(server.url, token=TOKEN, on_event=events.append):
        pass
    real = records("agent-turn-plain.jsonl")[0]["frame"]
    assert events[0]["event"] == "connect.challenge"
    assert set(events[0]) == set(real) and set(events[0]["payload"]) == set(real["payload"])


async def test_message_spawn_and_validation_spans_join_session_traces(tmp_path: Path) -> None:
    """Work a run hands on (inbox message, spawn request) and its validation are in the run's trace."""
    with capture_telemetry() as cap:
        jobs = (CronJob("nightly", "nightly-report", 3600.0, "nightly report: use a tool"),)
        server = GatewayServer(cap.telemetry, port=0, workspace=tmp_path / "clawd", time_scale=0.01, cron_jobs=jobs,
                               seed=3, collectors=True, tick_interval_s=0.2)
        async with server:
            async with GatewayClient(server.url) as client:
                await client.agent("spawn a helper and message builder")
                await client.call("cron.run", {"id": "nightly"})
            for _ in range(100):  # the watchers poll every 0.5 s; the sub-agent and the cron run finish later
                if (cap.spans_by_category("message") and cap.spans_by_category("spawn")
                        and len(cap.spans_by_category("session")) == 3
                        and len(cap.spans_by_category("validation")) == 9):
                    break
                await asyncio.sleep(0.1)
        assert server.observer_errors == []
    sessions = {s.context.span_id: s for s in cap.spans_by_category("session")}
    assert {str(s.attributes["clawdbot.session.type"]) for s in sessions.values()} == {"main", "subagent", "cron"}
    (main,) = [s for s in sessions.values() if s.attributes["clawdbot.session.type"] == "main"]
    handed_on = [*cap.spans_by_category("message"), *cap.spans_by_category("spawn")]
    assert {s.attributes["clawdbot.span.category"] for s in handed_on} == {"message", "spawn"}
    for span in handed_on:
        assert span.parent is not None and span.parent.span_id == main.context.span_id, span.name
        assert span.context.trace_id == main.context.trace_id
    validations = cap.spans_by_category("validation")
    assert len(validations) == 9  # L1, L2, L3 of the main run, the sub-agent and the cron run
    for span in validations:
        assert span.parent is not None and span.parent.span_id in sessions, span.name
        assert span.context.trace_id == sessions[span.parent.span_id].context.trace_id
    assert {v.parent.span_id for v in validations if v.parent is not None} == set(sessions)

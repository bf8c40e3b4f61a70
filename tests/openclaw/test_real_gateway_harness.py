"""Prove the harness drives REAL OpenClaw turns (real CLI -> real gateway -> fake model), and that the raw
WebSocket frames match the captured fixtures in /work/shared/fixtures/openclaw-2026.9.6."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.openclaw.fake_model import ErrorReply, FakeModelServer, TextReply, ToolCallReply
from tests.openclaw.harness import (
    DEFAULT_COST,
    DEFAULT_MODEL_MAX_RETRIES,
    GatewayWsClient,
    OpenClawGateway,
    parse_agent_json,
)

# The session gateway's start-up (+ warm-up turn) is charged to the first test: allow for a loaded machine.
pytestmark = [pytest.mark.openclaw, pytest.mark.timeout(1500)]

FIXTURES = Path("/work/shared/fixtures/openclaw-2026.9.6")


def _cost(prompt: int, completion: int) -> float:
    return (prompt * DEFAULT_COST["input"] + completion * DEFAULT_COST["output"]) / 1_000_000


def _session(name: str) -> str:
    return f"agent:main:{name}-{uuid.uuid4().hex[:8]}"


def _describe(proc: Any) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def test_plain_turn(openclaw_gateway: OpenClawGateway, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(TextReply("Plain answer from the fake model 4711.", prompt_tokens=1000, completion_tokens=10))
    proc = openclaw_gateway.run_agent_turn("say something plain", session_key=_session("plain"))
    assert proc.returncode == 0, _describe(proc)
    out = parse_agent_json(proc)
    assert out["status"] == "ok"
    assert out["result"]["payloads"][0]["text"] == "Plain answer from the fake model 4711."
    meta = out["result"]["meta"]["agentMeta"]
    assert (meta["provider"], meta["model"]) == ("fake", "fake-sonnet")
    assert meta["usage"]["input"] == 1000
    assert meta["usage"]["output"] == 10
    assert meta["costUsd"] == pytest.approx(_cost(1000, 10))

    chats = fake_model.chat_requests
    assert len(chats) == 1
    body = chats[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "fake-sonnet"
    assert "say something plain" in json.dumps(body["messages"])
    assert {"read", "ls", "exec"} <= set(chats[0].tool_names)

    # without --json the CLI prints just the reply text
    fake_model.enqueue(TextReply("Second plain answer."))
    proc = openclaw_gateway.run_agent_turn("again", json_output=False, session_key=_session("plain-text"))
    assert proc.returncode == 0, _describe(proc)
    assert "Second plain answer." in proc.stdout


def test_tool_call_turn(openclaw_gateway: OpenClawGateway, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(
        ToolCallReply("ls", {"path": "."}, call_id="call_ls_1", prompt_tokens=900, completion_tokens=5),
        TextReply("Listed the workspace.", prompt_tokens=1200, completion_tokens=12),
    )
    proc = openclaw_gateway.run_agent_turn("please list files", session_key=_session("tool"))
    assert proc.returncode == 0, _describe(proc)
    out = parse_agent_json(proc)
    assert out["result"]["payloads"][0]["text"] == "Listed the workspace."
    meta = out["result"]["meta"]["agentMeta"]
    assert meta["usage"]["input"] == 2100  # summed over both model calls
    assert meta["usage"]["output"] == 17
    assert meta["costUsd"] == pytest.approx(_cost(2100, 17))
    assert meta["terminalReceipt"]["successfulToolNames"] == ["ls"]

    chats = fake_model.chat_requests
    assert len(chats) == 2
    (tool_msg,) = chats[1].tool_results
    # OpenClaw rewrites tool-call ids to [A-Za-z0-9] only when replaying them to the model (call_ls_1 -> callls1)
    assert tool_msg["tool_call_id"] == "callls1"
    assistant_calls = [m for m in chats[1].messages if m.get("role") == "assistant" and m.get("tool_calls")]
    assert assistant_calls[-1]["tool_calls"][0]["function"]["name"] == "ls"
    content = json.dumps(tool_msg["content"])
    assert "AGENTS.md" in content  # the scratch workspace the gateway seeded


def test_failing_tool_turn(openclaw_gateway: OpenClawGateway, fake_model: FakeModelServer, tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.txt"
    fake_model.enqueue(
        ToolCallReply("read", {"path": str(missing)}, call_id="call_read_1"),
        TextReply("The file is missing."),
    )
    proc = openclaw_gateway.run_agent_turn("read a missing file", session_key=_session("toolfail"))
    assert proc.returncode == 0, _describe(proc)  # a failing tool does not fail the turn
    out = parse_agent_json(proc)
    assert out["result"]["payloads"][0]["text"] == "The file is missing."
    assert out["result"]["meta"]["agentMeta"]["terminalReceipt"]["successfulToolNames"] == []

    chats = fake_model.chat_requests
    assert len(chats) == 2
    (tool_msg,) = chats[1].tool_results
    assert tool_msg["tool_call_id"] == "callread1"
    content = json.dumps(tool_msg["content"]).lower()
    print("failing read tool result sent to the model:", content[:400])
    assert "enoent" in content or "not found" in content or "no such file" in content, content


def test_model_error_turn(openclaw_gateway: OpenClawGateway, fake_model: FakeModelServer) -> None:
    fake_model.set_default(ErrorReply(500, "fake upstream failure"))
    proc = openclaw_gateway.run_agent_turn("please fail", session_key=_session("modelerr"))
    assert proc.returncode != 0, _describe(proc)
    out = parse_agent_json(proc)
    assert out["ok"] is False
    assert "HTTP 500" in out["error"]["message"]
    # one attempt + the configured number of same-model retries (settings.json retry.provider.maxRetries)
    assert len(fake_model.chat_requests) == 1 + DEFAULT_MODEL_MAX_RETRIES


# ---------------------------------------------------------------------------------------------------------------
# raw WebSocket client vs the fixtures
# ---------------------------------------------------------------------------------------------------------------
def _fixture_frames(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _agent_events(frames: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [
        f["payload"]
        for f in frames
        if f.get("type") == "event" and f.get("event") == "agent" and f["payload"].get("runId") == run_id
    ]


def _keys_by_stream(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ev in events:
        out.setdefault(ev["stream"], set()).update(ev.keys())
    return out


async def test_raw_websocket_agent_turn_matches_fixtures(
    openclaw_gateway: OpenClawGateway, fake_model: FakeModelServer
) -> None:
    fake_model.enqueue(
        ToolCallReply("ls", {"path": "."}, call_id="call_ws_ls", prompt_tokens=900, completion_tokens=5),
        TextReply("Hello over raw websocket.", prompt_tokens=1200, completion_tokens=12),
    )
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    session_key = _session("ws")
    run_id = str(uuid.uuid4())

    async with GatewayWsClient.connect(openclaw_gateway.url, openclaw_gateway.token) as client:
        assert client.challenge["type"] == "event"
        assert set(client.challenge["payload"]) >= {"nonce", "ts"}
        hello = client.hello["payload"]
        assert hello["type"] == "hello-ok"
        assert hello["protocol"] == 4
        assert "agent" in hello["features"]["methods"]

        req_id = await client.send_request(
            "agent",
            {
                "message": "please use a tool now",
                "agentId": "main",
                "sessionKey": session_key,
                "deliver": False,
                "timeout": 600,
                "idempotencyKey": run_id,
            },
            frame_extra={"traceparent": traceparent},
        )
        final, frames = await client.collect(req_id, expect_final=True, timeout=300)

    fixture = [f["frame"] for f in _fixture_frames("agent-turn-tool-call.jsonl")]
    fx_accepted = next(f for f in fixture if f.get("type") == "res" and f["payload"].get("status") == "accepted")
    fx_final = [f for f in fixture if f.get("type") == "res" and f["payload"].get("status") == "ok"][-1]
    fx_run = fx_accepted["payload"]["runId"]

    # accepted res: runId (= idempotencyKey), sessionKey, status
    accepted = next(f for f in frames if f.get("type") == "res" and f.get("id") == req_id and f is not final)
    assert accepted["ok"] is True
    assert set(accepted["payload"]) == set(fx_accepted["payload"])
    assert accepted["payload"]["runId"] == run_id
    assert accepted["payload"]["sessionKey"] == session_key
    assert accepted["payload"]["status"] == "accepted"

    # agent events: same streams/keys as the fixture
    events = _agent_events(frames, run_id)
    fx_events = _agent_events(fixture, fx_run)
    ours, theirs = _keys_by_stream(events), _keys_by_stream(fx_events)
    for stream in ("lifecycle", "item", "usage", "assistant"):
        assert stream in ours, f"no {stream} events: {sorted(ours)}"
        assert theirs[stream] <= ours[stream], (stream, theirs[stream] - ours[stream])
    assert all(ev["sessionKey"] == session_key for ev in events)

    phases = [ev["data"]["phase"] for ev in events if ev["stream"] == "lifecycle"]
    assert phases[0] == "start"
    assert phases[-1] == "end"
    assert {"model", "finishing"} <= set(phases)
    end = next(ev for ev in events if ev["stream"] == "lifecycle" and ev["data"]["phase"] == "end")
    assert {"startedAt", "endedAt", "stopReason"} <= set(end["data"])

    items = [ev["data"] for ev in events if ev["stream"] == "item"]
    fx_item_keys = set().union(*(ev["data"].keys() for ev in fx_events if ev["stream"] == "item"))
    assert fx_item_keys <= set().union(*(d.keys() for d in items))
    assert [(d["kind"], d["name"], d["toolCallId"], d["phase"]) for d in items] == [
        ("tool", "ls", "call_ws_ls", "start"),
        ("tool", "ls", "call_ws_ls", "end"),
    ]
    assert items[-1]["status"] == "completed"

    assistant_text = [ev["data"]["text"] for ev in events if ev["stream"] == "assistant"]
    assert assistant_text[-1] == "Hello over raw websocket."

    # chat events carry the same runId/sessionKey
    chat = [f["payload"] for f in frames if f.get("event") == "chat" and f["payload"].get("runId") == run_id]
    assert chat and chat[-1]["state"] == "final"

    # final res: agentMeta.usage with the fake model's token counts and a non-zero cost
    assert final["ok"] is True
    assert set(final["payload"]) >= set(fx_final["payload"])
    meta = final["payload"]["result"]["meta"]["agentMeta"]
    assert set(fx_final["payload"]["result"]["meta"]["agentMeta"]) <= set(meta)
    assert meta["usage"]["input"] == 900 + 1200
    assert meta["usage"]["output"] == 5 + 12
    assert meta["usage"]["total"] == 2117
    assert meta["usage"]["cost"]["total"] == pytest.approx(_cost(2100, 17))
    assert meta["costUsd"] == pytest.approx(_cost(2100, 17))
    assert meta["lastCallUsage"]["input"] == 1200

    # A W3C traceparent on the request frame is honoured: every model HTTP request of the run carries the same
    # trace-id (with the gateway's own span ids); the response frames do not echo it.
    chats = fake_model.chat_requests
    assert len(chats) == 2
    model_traceparents = [c.headers.get("traceparent", "") for c in chats]
    for tp in model_traceparents:
        version, tid, span, _flags = tp.split("-")
        assert (version, tid) == ("00", trace_id), model_traceparents
        assert span != traceparent.split("-")[2]
    echoed = [f for f in frames if trace_id in json.dumps(f)]
    print("frame traceparent:", traceparent, "model request traceparents:", model_traceparents)
    print("frames echoing the trace id:", [(f.get("type"), f.get("event"), f.get("id")) for f in echoed])
    print("gateway file log mentions trace id:", trace_id in openclaw_gateway.file_log.read_text(errors="replace"))


async def test_raw_websocket_traceparent_limits(openclaw_gateway: OpenClawGateway) -> None:
    """Documented (docs/gateway/protocol/transport.md): malformed traceparent values <= 128 chars are ignored
    (fresh trace, RPC still succeeds); longer values make the request frame invalid."""
    async with GatewayWsClient.connect(openclaw_gateway.url, openclaw_gateway.token, scopes=("operator.read",)) as c:
        res, _ = await c.request("health", {}, frame_extra={"traceparent": "not-a-traceparent"}, timeout=60)
        assert res["ok"] is True
        res, _ = await c.request("health", {}, frame_extra={"traceparent": "00-" + "a" * 200}, timeout=60)
        print("health with a 203-char traceparent ->", json.dumps(res)[:500])
        assert res["ok"] is False
        assert res["error"]["code"] == "INVALID_REQUEST", res
        # the connection survives the invalid frame
        res, _ = await c.request("health", {}, timeout=60)
        assert res["ok"] is True

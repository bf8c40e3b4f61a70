"""The proxy in front of the REAL OpenClaw gateway (npm openclaw, fake model): the real CLI through it.

Reuses the fixtures of tests/openclaw (the real gateway, the scripted fake model).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.testing import Capture, capture_telemetry
from tests.openclaw.fake_model import ErrorReply, FakeModelServer, TextReply, ToolCallReply
from tests.openclaw.harness import OpenClawGateway, parse_agent_json

pytestmark = pytest.mark.openclaw


class _ProxyThread:
    """Our gateway in proxy mode on its own event loop (the CLI calls block the test's thread)."""

    def __init__(self, cap: Capture, upstream: str, token: str) -> None:
        self.server = GatewayServer(cap.telemetry, port=0, upstream=upstream, upstream_token=token, collectors=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> GatewayServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def proxied(openclaw_gateway: OpenClawGateway) -> Iterator[tuple[GatewayServer, Capture]]:
    with capture_telemetry() as cap, _ProxyThread(cap, openclaw_gateway.url, openclaw_gateway.token) as server:
        yield server, cap


def _session(name: str) -> str:
    return f"agent:main:{name}-{uuid.uuid4().hex[:8]}"


def _describe(proc: Any) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"


def test_cli_through_proxy_gives_one_trace_per_turn(
    openclaw_gateway: OpenClawGateway,
    fake_model: FakeModelServer,
    proxied: tuple[GatewayServer, Capture],
) -> None:
    server, cap = proxied
    url = server.url
    metas: list[dict[str, Any]] = []

    # 1. plain, first directly then through the proxy: the CLI's result is the same
    fake_model.enqueue(TextReply("Plain 4711.", prompt_tokens=1000, completion_tokens=10),
                       TextReply("Plain 4711.", prompt_tokens=1000, completion_tokens=10))
    direct = openclaw_gateway.run_agent_turn("say something plain", session_key=_session("direct"))
    via = openclaw_gateway.run_agent_turn("say something plain", url, session_key=_session("plain"))
    assert direct.returncode == via.returncode == 0, _describe(via)
    out_direct, out_via = parse_agent_json(direct), parse_agent_json(via)
    assert out_via["result"]["payloads"] == out_direct["result"]["payloads"]
    assert out_via["result"]["meta"]["agentMeta"]["usage"] == out_direct["result"]["meta"]["agentMeta"]["usage"]
    metas.append(out_via["result"]["meta"]["agentMeta"])
    proxied_chats: list[Any] = []

    def both(message: str, name: str, *replies: Any) -> Any:
        """The same turn directly, then through the proxy: the CLI must see the same outcome."""
        fake_model.enqueue(*replies, *replies)
        direct = openclaw_gateway.run_agent_turn(message, session_key=_session(f"direct{name}"))
        seen = len(fake_model.chat_requests)
        via = openclaw_gateway.run_agent_turn(message, url, session_key=_session(name))
        proxied_chats.extend(fake_model.chat_requests[seen:])
        assert via.returncode == direct.returncode == 0, _describe(via)
        out_direct, out_via = parse_agent_json(direct), parse_agent_json(via)
        assert out_via["result"]["payloads"] == out_direct["result"]["payloads"]
        assert out_via["result"]["meta"]["agentMeta"]["usage"] == out_direct["result"]["meta"]["agentMeta"]["usage"]
        return out_via

    # 2. a tool call
    out = both("please list files", "tool",
               ToolCallReply("ls", {"path": "."}, call_id="call_px_ls", prompt_tokens=900, completion_tokens=5),
               TextReply("Listed.", prompt_tokens=1200, completion_tokens=12))
    metas.append(out["result"]["meta"]["agentMeta"])
    # 3. a failing tool
    out = both("read a missing file", "toolfail",
               ToolCallReply("read", {"path": "/nonexistent/file.txt"}, call_id="call_px_read"),
               TextReply("The file is missing."))
    metas.append(out["result"]["meta"]["agentMeta"])
    # 4. a model error: the CLI fails through the proxy as it does without it
    fake_model.set_default(ErrorReply(500, "fake upstream failure"))
    direct_fail = openclaw_gateway.run_agent_turn("please fail", session_key=_session("directmodelerr"))
    seen = len(fake_model.chat_requests)
    proc = openclaw_gateway.run_agent_turn("please fail", url, session_key=_session("modelerr"))
    proxied_chats.extend(fake_model.chat_requests[seen:])
    assert proc.returncode == direct_fail.returncode != 0
    failed = parse_agent_json(proc)
    assert failed["ok"] is False and "HTTP 500" in failed["error"]["message"]
    assert failed["error"] == parse_agent_json(direct_fail)["error"]
    fake_model.set_default(TextReply())
    # other CLI calls pass through unchanged
    health = openclaw_gateway.call("health", gateway_url=url)
    assert health["ok"] is True
    assert openclaw_gateway.call("sessions.list", gateway_url=url)["sessions"]

    assert server.observer_errors == []
    # the liveness probe: the upstream's own uptime (it ran before this test), reported as the gateway's
    assert server.monitor is not None
    uptime = server.monitor.uptime_s()
    assert uptime is not None and uptime >= (openclaw_gateway.startup_seconds or 0)  # it ran before the proxy

    agent_requests = [s for s in cap.spans_by_category("request") if s.attributes["rpc.method"] == "agent"]
    assert len(agent_requests) == 4
    assert len({s.context.trace_id for s in agent_requests}) == 4  # one trace per turn
    sessions = cap.spans_by_category("session")
    assert len(sessions) == 4
    by_trace: dict[int, list[Any]] = {}
    for span in cap.finished_spans():
        by_trace.setdefault(span.context.trace_id, []).append(span)
    model_calls: list[int] = []
    for request in agent_requests:
        spans = by_trace[request.context.trace_id]
        (session,) = [s for s in spans if s.attributes.get("clawdbot.span.category") == "session"]
        assert session.parent is not None and session.parent.span_id == request.context.span_id
        calls = [s for s in spans if s.attributes.get("clawdbot.span.category") == "model_call"]
        tools = [s for s in spans if s.attributes.get("clawdbot.span.category") == "tool_call"]
        assert all(c.parent.span_id == session.context.span_id for c in calls)  # type: ignore[union-attr]
        assert all(t.parent.span_id == session.context.span_id for t in tools)  # type: ignore[union-attr]
        model_calls.append(len(calls))
        key = session.attributes["clawdbot.session.key"]
        if "-tool-" in key:
            (tool,) = tools
            assert tool.attributes["gen_ai.tool.name"] == "ls" and tool.status.status_code is StatusCode.OK
        elif "-toolfail-" in key:
            (tool,) = tools
            assert tool.attributes["gen_ai.tool.name"] == "read"
            assert tool.status.status_code is StatusCode.ERROR, tool.attributes
        elif "-modelerr-" in key:
            assert calls and all(c.status.status_code is StatusCode.ERROR for c in calls)
            assert request.status.status_code is StatusCode.ERROR
    assert model_calls[:3] == [1, 2, 2]
    # OpenClaw continues the traceparent we put on the frame: its model HTTP calls are in our traces
    ours = {f"{s.context.trace_id:032x}" for s in agent_requests}
    model_traces = {c.headers.get("traceparent", "").split("-")[1] for c in proxied_chats
                    if c.headers.get("traceparent", "").count("-") == 3}
    assert len(model_traces) == 3 and model_traces <= ours, (model_traces, ours)  # tool, toolfail, modelerr

    tokens = {(p.attributes["token_type"]): p.value for p in cap.metric_points("session.tokens_used")}
    assert tokens["input"] == sum(m["usage"]["input"] for m in metas)
    assert tokens["output"] == sum(m["usage"]["output"] for m in metas)
    (cost,) = cap.metric_points("session.cost_usd")
    assert cost.value == pytest.approx(sum(m["costUsd"] for m in metas))
    errors = {p.attributes["error_type"]: p.value for p in cap.metric_points("session.errors")}
    assert errors.get("model", 0) >= 1 and errors.get("tool", 0) == 1
    audit = [line for line in cap.log_lines() if line["component"] == "audit"]
    assert audit and {line["metadata"]["outcome"] for line in audit} == {"success"}
    assert openclaw_gateway.token not in json.dumps(cap.log_lines())

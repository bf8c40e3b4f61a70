"""The whole user workflow against the REAL OpenClaw gateway: OTEL_* variables, `clawdbot-otel gateway
--upstream` in front of it, real `openclaw` CLI turns, then the traces in Jaeger and the token, cost and
uptime series in Prometheus, all through the real collector.

The gateway exports to the keep-all collector (sampling 100%), so every run's trace is there to inspect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.openclaw.fake_model import FakeModelServer, TextReply, ToolCallReply
from tests.openclaw.harness import OpenClawGateway, parse_agent_json

from .conftest import ExtraCollector, RunningStack, gateway_process, jaeger_spans, parent_of, prom_query, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.openclaw]


@pytest.fixture
def proxy(openclaw_gateway: OpenClawGateway, collector_keep_all: ExtraCollector,
          tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`clawdbot-otel gateway --upstream` as a user runs it; (its URL, its service name)."""
    service = f"clawdbot-openclaw-{uuid.uuid4().hex[:8]}"
    args = ["--upstream", openclaw_gateway.url, "--workspace", str(tmp_path / "clawd")]
    probe_token = {"OPENCLAW_GATEWAY_TOKEN": openclaw_gateway.token}  # the liveness probe's handshake
    with gateway_process(collector_keep_all.otlp_grpc, service, args, tmp_path, probe_token) as gateway:
        yield gateway.url, service


def test_real_openclaw_runs_arrive_as_connected_traces_and_metrics(
    stack: RunningStack,
    openclaw_gateway: OpenClawGateway,
    fake_model: FakeModelServer,
    proxy: tuple[str, str],
) -> None:
    url, service = proxy
    fake_model.enqueue(TextReply("Plain e2e.", prompt_tokens=700, completion_tokens=9),
                       ToolCallReply("ls", {"path": "."}, call_id="call_e2e_ls", prompt_tokens=800, completion_tokens=4),
                       TextReply("Listed e2e.", prompt_tokens=1100, completion_tokens=11))
    metas: list[dict[str, Any]] = []
    for message, name in (("say something plain", "plain"), ("please list files", "tool")):
        proc = openclaw_gateway.run_agent_turn(message, url, session_key=f"agent:main:e2e-{name}-{uuid.uuid4().hex[:6]}")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        metas.append(parse_agent_json(proc)["result"]["meta"]["agentMeta"])

    def two_complete_runs() -> list[dict[str, Any]]:
        spans = jaeger_spans(stack, service)
        cats = {(s["traceID"], s["tags_map"].get("clawdbot.span.category")) for s in spans
                if s["tags_map"].get("rpc.method") == "agent" or s["tags_map"].get("clawdbot.span.category")
                in ("session", "model_call", "tool_call")}
        traces = {t for t, c in cats if c == "request"}
        complete = [t for t in traces if {(t, "session"), (t, "model_call")} <= cats]
        return spans if len(complete) == 2 else []

    spans = wait_for(two_complete_runs, 90, 2, "two complete OpenClaw runs in Jaeger")
    parent = parent_of(spans)

    agent_requests = [s for s in spans if s["tags_map"].get("rpc.method") == "agent"]
    assert len(agent_requests) == 2 and len({s["traceID"] for s in agent_requests}) == 2  # one trace per run
    for request in agent_requests:
        in_trace = [s for s in spans if s["traceID"] == request["traceID"]]
        (session,) = [s for s in in_trace if s["tags_map"].get("clawdbot.span.category") == "session"]
        assert parent(session) is request
        assert session["tags_map"]["gen_ai.operation.name"] == "invoke_agent"
        children = [s for s in in_trace if s["tags_map"].get("clawdbot.span.category") in ("model_call", "tool_call")]
        assert children and all(parent(c) is session for c in children)
    tools = [s for s in spans if s["tags_map"].get("clawdbot.span.category") == "tool_call"]
    assert [t["tags_map"]["gen_ai.tool.name"] for t in tools] == ["ls"]
    sessions = [s for s in spans if s["tags_map"].get("clawdbot.span.category") == "session"]
    assert sum(int(s["tags_map"]["gen_ai.usage.input_tokens"]) for s in sessions) == sum(
        m["usage"]["input"] for m in metas)

    job = f'job="{service}"'

    def token_sums() -> dict[str, float]:
        rows = prom_query(stack, f"sum by (token_type) (session_tokens_used_total{{{job}}})")
        return {r["metric"]["token_type"]: float(r["value"][1]) for r in rows}

    expected = {"input": float(sum(m["usage"]["input"] for m in metas)),
                "output": float(sum(m["usage"]["output"] for m in metas))}
    wait_for(lambda: {k: v for k, v in token_sums().items() if k in expected} == expected, 60, 2,
             f"token sums {expected} in Prometheus")
    cost = prom_query(stack, f"sum(session_cost_usd_total{{{job}}})")
    assert cost and float(cost[0]["value"][1]) == pytest.approx(sum(m["costUsd"] for m in metas))
    # liveness comes from the upstream: its uptime (it started before the proxy), not the proxy's
    uptime = prom_query(stack, f"gateway_uptime_seconds{{{job}}}")
    assert uptime and float(uptime[0]["value"][1]) > 0
    assert uptime[0]["metric"]["instance"].endswith(f":{url.rsplit(':', 1)[1]}")  # host:port, stable

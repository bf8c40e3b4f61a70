"""The user's workflow end to end: OTEL_* variables, `clawdbot-otel gateway`, `clawdbot-otel demo`, then
every catalogue metric in Prometheus, connected traces in Jaeger, logs in VictoriaLogs, dashboards with data.

The gateway sends to a collector whose sampling percentage is 100, so every trace is there to inspect
(sampling itself is tested in test_sampling.py).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from clawdbot_otel.conventions import METRICS, Kind
from clawdbot_otel.presentation import DASHBOARDS, dashboard_json

from .conftest import (
    DemoRun,
    RunningStack,
    http_json,
    jaeger_spans,
    logsql,
    parent_of,
    prom_query,
    wait_for,
)

pytestmark = pytest.mark.stack


def _series_name(spec: Any) -> str:
    return f"{spec.prometheus_name}_bucket" if spec.kind is Kind.HISTOGRAM else spec.prometheus_name


def test_every_catalogue_metric_has_series_with_its_labels(stack: RunningStack, demo_run: DemoRun) -> None:
    def missing() -> list[str]:
        return [m.name for m in METRICS if not prom_query(stack, f'{_series_name(m)}{{job="{demo_run.service}"}}')]

    last: list[str] = []

    def all_there() -> bool:
        nonlocal last
        last = missing()
        return not last

    deadline = time.monotonic() + 60
    while not all_there() and time.monotonic() < deadline:
        time.sleep(2)
    assert not last, f"no series in Prometheus for {last}\n--- demo:\n{demo_run.demo_output[-2000:]}"
    for spec in METRICS:
        series = prom_query(stack, f'{_series_name(spec)}{{job="{demo_run.service}"}}')
        keys = set().union(*(s["metric"] for s in series))
        assert set(spec.label_names) <= keys, (spec.name, sorted(keys))
    # The gateway emitted nothing outside the catalogue.
    bad = prom_query(stack, f'clawdbot_otel_dropped_total{{job="{demo_run.service}",'
                        f'reason=~"unknown_metric|unknown_label|wrong_kind|unknown_attribute|unknown_span_category"}}')
    assert bad == []


def test_jaeger_holds_connected_traces_with_every_span_category(stack: RunningStack, demo_run: DemoRun) -> None:
    categories = {"request", "session", "tool_call", "spawn", "message", "validation"}

    def spans_with_all_categories() -> list[dict[str, Any]]:
        spans = jaeger_spans(stack, demo_run.service)
        present = {s["tags_map"].get("clawdbot.span.category") for s in spans}
        return spans if categories <= present else []

    spans = wait_for(spans_with_all_categories, 90, 2, "all six span categories in Jaeger")
    parent = parent_of(spans)

    def category(span: dict[str, Any] | None) -> str | None:
        return None if span is None else span["tags_map"].get("clawdbot.span.category")

    tools = [s for s in spans if category(s) == "tool_call"]
    connected = [t for t in tools if category(parent(t)) == "session" and category(parent(parent(t))) == "request"]
    assert connected, "no tool_call span whose parent is a session span whose parent is a request span"
    tool = connected[0]
    session = parent(tool)
    request = parent(session)
    assert tool["traceID"] == session["traceID"] == request["traceID"]
    assert {"gen_ai.tool.name", "gen_ai.tool.call.id"} <= set(tool["tags_map"])
    assert tool["tags_map"]["gen_ai.operation.name"] == "execute_tool"
    assert session["tags_map"]["gen_ai.operation.name"] == "invoke_agent"
    assert {"gen_ai.agent.name", "gen_ai.request.model", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens"} <= set(session["tags_map"])
    assert request["tags_map"]["rpc.method"] == "agent"
    required = {
        "spawn": {"clawdbot.spawn.label", "clawdbot.spawn.model", "clawdbot.spawn.task_summary"},
        "message": {"clawdbot.message.from", "clawdbot.message.to", "clawdbot.message.type"},
        "validation": {"clawdbot.validation.layer", "clawdbot.validation.result"},
    }
    session_traces = {s["traceID"] for s in spans if category(s) == "session"}
    for cat, keys in required.items():
        found = [s for s in spans if category(s) == cat and keys <= set(s["tags_map"])]
        assert found, f"no {cat} span with {sorted(keys)}"
        joined = [s for s in found if s["traceID"] in session_traces]
        assert joined, f"no {cat} span in the trace of an agent session (they come from its run)"
    errors = [s for s in spans if s["tags_map"].get("otel.status_code") == "ERROR"]
    assert errors, "the demo's failing tools and model errors should leave error spans"


def test_logs_reach_the_log_store_with_trace_ids_that_resolve_in_jaeger(
    stack: RunningStack, demo_run: DemoRun
) -> None:
    def rows() -> list[dict[str, Any]]:
        return logsql(stack.victorialogs, f'_time:1h "service.name":="{demo_run.service}" trace_id:*', limit=200)

    if not any(rows() for _ in range(30) if not time.sleep(2)):
        sample = logsql(stack.victorialogs, f'_time:1h "service.name":="{demo_run.service}"', limit=3)
        pytest.fail(f"no log of {demo_run.service} with a trace id in VictoriaLogs; some of its logs: {sample}")
    found = rows()
    trace_id = found[0]["trace_id"]
    status, body = http_json(f"{stack.jaeger}/api/traces/{trace_id}")
    assert status == 200 and body["data"], f"trace {trace_id} from the log store not in Jaeger"


def test_every_dashboard_panel_has_data_after_the_demo(stack: RunningStack, demo_run: DemoRun) -> None:
    # Empty is the healthy state of the Alerts view (nothing firing, nothing dropped); recording rules
    # are evaluated once a minute and may not have run yet.
    empty = []
    for d in DASHBOARDS:
        if d.uid == "clawdbot-alerts":
            continue
        for panel in dashboard_json(d)["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                if target["datasource"]["type"] == "victoriametrics-logs-datasource":
                    if not logsql(stack.victorialogs, f'_time:1h "service.name":="{demo_run.service}" {expr}', limit=5):
                        empty.append(f"{d.title} / {panel['title']}: LogsQL {expr}")
                    continue
                if expr.startswith("clawdbot:") or expr == "spawn_queue_wait_p99" or "ALERTS" in expr:
                    continue  # recording rules may not have run yet; alert tiles are empty when all is well
                if not prom_query(stack, expr, at=demo_run.ended_at):  # rates over the demo's last minute
                    empty.append(f"{d.title} / {panel['title']}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

"""The catalogue against the user's design: every documented metric, label value and span category."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clawdbot_otel.conventions import (
    LABELS,
    METRICS,
    METRICS_BY_NAME,
    RECORDING_RULES,
    SPAN_CATEGORIES_BY_NAME,
    Kind,
    prometheus_name,
)

# The user's design, the contract: a copy travels with the repository (CI clones it alone); where the
# shared original sits beside the checkout, the copy must still be it.
DESIGN = Path(__file__).resolve().parents[1] / "data" / "TELEMETRY-SYSTEM.md"
SHARED_DESIGN = Path(__file__).resolve().parents[2].parent / "shared" / "design" / "TELEMETRY-SYSTEM.md"


def _design() -> str:
    return DESIGN.read_text()


def test_the_copy_of_the_design_is_the_users() -> None:
    """Runs in every clone: the copy is the design (its title); beside the shared original, it is the original."""
    assert _design().startswith("# "), f"{DESIGN} is not the design document"
    if SHARED_DESIGN.exists():  # the extra check, where the user's workspace is beside this checkout
        assert _design() == SHARED_DESIGN.read_text(), "tests/data/TELEMETRY-SYSTEM.md is out of date"


def _metric_tables(text: str) -> dict[str, tuple[str, list[str]]]:
    """Documented name -> (type, labels) from every '| `name` | Type | ... | labels |' table row."""
    rows: dict[str, tuple[str, list[str]]] = {}
    in_metrics = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_metrics = line.strip() == "## Metrics Collection"
        m = re.match(r"\|\s*`([a-z0-9_]+)`\s*\|\s*(Counter|Gauge|Histogram)\s*\|[^|]*\|\s*([^|]*)\|", line)
        if in_metrics and m:
            labels = re.findall(r"`([a-z_]+)`", m.group(3))
            rows[m.group(1)] = (m.group(2), labels)
    return rows


def test_every_metric_of_the_design_tables_is_in_the_catalogue_with_its_type_and_labels() -> None:
    documented = _metric_tables(_design())
    assert len(documented) == 36, "the design's metric tables have 36 rows"
    expected_kind = {"Counter": {Kind.COUNTER}, "Histogram": {Kind.HISTOGRAM},
                     "Gauge": {Kind.GAUGE, Kind.UPDOWN_COUNTER}}
    for name, (doc_type, labels) in documented.items():
        spec = METRICS_BY_NAME.get(name)
        assert spec is not None, f"{name} missing from the catalogue"
        assert spec.kind in expected_kind[doc_type], name
        dropped = set(labels) - set(spec.label_names)
        # The only documented label the catalogue drops is the unbounded task_id, and it says why.
        assert dropped <= {"task_id"}, (name, dropped)
        if dropped:
            assert "task_id" in spec.note


def test_names_used_elsewhere_in_the_design_are_defined() -> None:
    text = _design()
    for name in ("task_latency_seconds", "resource_memory_total"):
        assert name in text and name in METRICS_BY_NAME
    rule = {r.name: r for r in RECORDING_RULES}["spawn_queue_wait_p99"]
    assert rule.source_metric in METRICS_BY_NAME
    assert f"{rule.source_metric}_bucket" in rule.expr


def test_label_standards_table_values_are_the_enumerations() -> None:
    table = {}
    for line in _design().splitlines():
        m = re.match(r"\|\s*`([a-z_]+)`\s*\|[^|]*\|\s*(`.*)\|\s*$", line)
        if m:
            table[m.group(1)] = [v for v in re.findall(r"`([^`]+)`", m.group(2))]
    assert {"status", "method", "model", "type", "layer", "error_type"} <= set(table)
    by_name: dict[str, set[str]] = {}
    for label in LABELS:
        by_name.setdefault(label.name, set()).update(label.values)
    for key, values in table.items():
        assert set(values) <= by_name[key], (key, values)
        assert "other" in by_name[key]


@pytest.mark.parametrize(
    ("otel_name", "unit", "kind", "expected"),
    [
        ("gateway.requests", "{request}", Kind.COUNTER, "gateway_requests_total"),
        ("gateway.request.latency", "s", Kind.HISTOGRAM, "gateway_request_latency_seconds"),
        ("gateway.throughput.requests", "{request}/s", Kind.GAUGE, "gateway_throughput_requests_per_second"),
        ("gateway.cpu", "%", Kind.GAUGE, "gateway_cpu_percent"),
        ("resource.memory.total", "By", Kind.GAUGE, "resource_memory_total_bytes"),
        ("task.completion_rate", "1", Kind.GAUGE, "task_completion_rate_ratio"),
        ("session.tokens_used", "{token}", Kind.COUNTER, "session_tokens_used_total"),
        ("http.server.duration", "ms", Kind.HISTOGRAM, "http_server_duration_milliseconds"),
        ("queue.size", "By", Kind.UPDOWN_COUNTER, "queue_size_bytes"),
    ],
)
def test_prometheus_names_follow_the_collectors_translation(
    otel_name: str, unit: str, kind: Kind, expected: str
) -> None:
    assert prometheus_name(otel_name, unit, kind) == expected


def test_names_are_unique_and_deviations_are_explained() -> None:
    otel = [m.otel_name for m in METRICS]
    prom = [m.prometheus_name for m in METRICS]
    assert len(set(otel)) == len(otel)
    assert len(set(prom)) == len(prom)
    for m in METRICS:
        if m.prometheus_name != m.name:
            assert m.note, f"{m.name} -> {m.prometheus_name} needs a recorded reason"
        if m.kind is Kind.HISTOGRAM:
            assert list(m.buckets) == sorted(m.buckets) and len(m.buckets) >= 8, m.name


def test_kpi_thresholds_are_bucket_boundaries() -> None:
    """histogram_quantile is exact at a boundary: alert thresholds must be boundaries."""
    assert 1.0 in METRICS_BY_NAME["gateway_request_latency_seconds"].buckets
    assert 60.0 in METRICS_BY_NAME["spawn_queue_latency_seconds"].buckets
    assert 60.0 in METRICS_BY_NAME["task_latency_seconds"].buckets
    assert 5.0 in METRICS_BY_NAME["inbox_delivery_latency_seconds"].buckets


def test_span_categories_carry_design_data_and_genai_conventions() -> None:
    assert {"request", "session", "tool_call", "spawn", "message", "validation"} <= set(SPAN_CATEGORIES_BY_NAME)
    session = SPAN_CATEGORIES_BY_NAME["session"]
    assert session.gen_ai_operation == "invoke_agent"
    assert {"gen_ai.agent.name", "gen_ai.request.model", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens"} <= session.attribute_keys
    tool = SPAN_CATEGORIES_BY_NAME["tool_call"]
    assert tool.gen_ai_operation == "execute_tool"
    assert {"gen_ai.tool.name", "gen_ai.tool.call.id"} <= tool.attribute_keys
    assert all(a.opt_in for a in tool.attributes if a.key in {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result"})


def _cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "clawdbot_otel.cli", *args], check=True, capture_output=True, text=True
    ).stdout


def test_cli_catalogue_json_lists_every_documented_metric() -> None:
    data = json.loads(_cli("catalogue", "--format", "json"))
    names = {m["name"] for m in data["metrics"]}
    assert set(_metric_tables(_design())) <= names
    for m in data["metrics"]:
        assert {"name", "otel_name", "kind", "unit", "labels", "prometheus_name", "description"} <= set(m)
    assert {s["category"] for s in data["spans"]} >= {"request", "session", "tool_call", "spawn", "message",
                                                       "validation"}

"""Dashboards: generated from the catalogue, provisioned, every query valid PromQL over known names only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawdbot_otel.conventions import METRICS_BY_NAME, Kind
from clawdbot_otel.presentation import DASHBOARDS, KPI_RECORDING_RULES, Dashboard, Panel, dashboard_json

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "clawdbot.yml"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus (clawdbot-otel stack build)")
    return promtool


def _queries(uid: str, title: str) -> dict[str, str]:
    """legend -> PromQL of one panel."""
    panel = next(p for d in DASHBOARDS if d.uid == uid for p in d.panels if p.title == title)
    return {legend: expr for expr, legend in panel.queries}


def test_provisioned_dashboards_are_current() -> None:
    on_disk = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    generated = {d.uid: dashboard_json(d) for d in DASHBOARDS}
    assert on_disk == generated, "stale: run `clawdbot-otel dashboards --write deploy/grafana/dashboards`"
    assert len(generated) == 6  # the design's six summary views


@pytest.mark.tools
def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = [{"record": f"check:{d.uid.replace('-', '_')}:{i}", "expr": target["expr"]}
             for d in DASHBOARDS for i, target in enumerate(
                 t for p in dashboard_json(d)["panels"] for t in p["targets"] if _is_promql(t))]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


@pytest.mark.tools
def test_derived_overview_and_alert_history_panels_compute_what_they_say(tmp_path: Path) -> None:
    tasks = _queries("clawdbot-overview", "Task status")
    last_active = _queries("clawdbot-alerts", "Recent alerts (24h)")["last active"]
    firing_now = _queries("clawdbot-alerts", "Firing now")["instances"]
    activations = _queries("clawdbot-alerts", "Activations (24h)")["{{alertname}} ({{severity}})"]

    def sample(expr: str, value: float, labels: str = "{}") -> dict[str, Any]:
        return {"expr": expr, "eval_time": "50m", "exp_samples": [{"labels": labels, "value": value}]}

    backlog = '{alertname="QueueBacklog", severity="warning"}'
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [
        {   # 500 tasks succeeded, 250 timed out, 200 of the successes have an L3 result; 4 heartbeats running.
            "interval": "1m",
            "input_series": [
                {"series": 'task_completion_total{status="success",phase="p1"}', "values": "0+10x50"},
                {"series": 'task_completion_total{status="timeout",phase="p1"}', "values": "0+5x50"},
                {"series": 'task_validation_passes_total{layer="L3"}', "values": "0+3x50"},
                {"series": 'task_validation_failures_total{layer="L3",reason="r"}', "values": "0+1x50"},
                {"series": 'task_validation_passes_total{layer="L1"}', "values": "0+10x50"},
                {"series": "heartbeat_active", "values": "4x50"},
            ],
            "promql_expr_test": [sample(tasks["completed (24h)"], 500), sample(tasks["failed (24h)"], 250),
                                 sample(tasks["pending validation"], 300), sample(tasks["in progress"], 4)],
        },
        {   # No task ever failed: 0, not an empty result.
            "interval": "1m",
            "input_series": [{"series": 'task_completion_total{status="success",phase="p1"}', "values": "0+1x50"}],
            "promql_expr_test": [sample(tasks["failed (24h)"], 0), sample(tasks["pending validation"], 50)],
        },
        {   # QueueBacklog fires twice (pending from 0m and from 20m) and has resolved by 50m.
            "interval": "1m",
            "input_series": [{"series": "spawn_queue_depth", "values": "25x9 5x9 25x9 5x30"},
                             {"series": 'gateway_uptime_seconds{job="g"}', "values": "0+60x60"}],
            "promql_expr_test": [
                sample(last_active, 20 * 60 * 1000, backlog),  # ms, for Grafana's dateTime units
                sample(activations, 2, backlog),
                {"expr": firing_now, "eval_time": "50m", "exp_samples": []},
                {"expr": firing_now, "eval_time": "27m", "exp_samples": [{"labels": backlog, "value": 1}]},
            ],
        },
    ]}
    path = tmp_path / "panels_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run([_promtool(), "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: Series that Prometheus and the stack write themselves, outside the catalogue.
STACK_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE", "up", "target_info"})
_HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def _known_names() -> frozenset[str]:
    names = set(STACK_SERIES) | {name for name, _ in KPI_RECORDING_RULES}
    for spec in METRICS_BY_NAME.values():
        names.add(spec.prometheus_name)
        if spec.kind is Kind.HISTOGRAM:
            names |= {spec.prometheus_name + suffix for suffix in _HISTOGRAM_SERIES}
    return frozenset(names)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_OR_RANGE = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
# An identifier not inside a number (1e3) and not called like a function.
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "atan2", "inf", "nan", "by", "without", "on", "ignoring",
                       "group_left", "group_right"})


def metric_names(expr: str) -> set[str]:
    """The metric and rule names a PromQL expression selects: every identifier left once string
    literals, label matchers, ranges, label lists, offsets, function names and keywords are removed."""
    assert "__name__" not in expr, f"select by name, not by a __name__ matcher: {expr}"
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS_OR_RANGE, _LABEL_LIST, _OFFSET):
        text = pattern.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.95, sum by (le, method) (rate(gateway_request_latency_seconds_bucket{method="a}b"}[5m])))',
     {"gateway_request_latency_seconds_bucket"}),
    ("sum(rate(gateway_requsts_total[5m])) / 1e3 or vector(0)", {"gateway_requsts_total"}),
    ("max(up offset 1h) unless on (job) group_left (instance) target_info", {"up", "target_info"}),
    ("1000 * max by (alertname) (max_over_time(ALERTS_FOR_STATE{x='y'}[24h:1m])) > bool 0", {"ALERTS_FOR_STATE"}),
    ("clamp_min((sum(increase(a_total[24h])) or vector(0)) - b, 0)", {"a_total", "b"}),
])
def test_metric_names_finds_every_selected_name_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def _is_promql(target: dict[str, Any]) -> bool:
    """A Prometheus target (the log panels' LogsQL is run against VictoriaLogs by the end-to-end test)."""
    return bool(target["datasource"]["type"] == "prometheus")


def test_log_panels_ask_the_log_store_for_instant_logs() -> None:
    logs = [(d.uid, p) for d in DASHBOARDS for p in dashboard_json(d)["panels"] if p["type"] == "logs"]
    assert logs, "the design's log view: at least one logs panel"
    for uid, panel in logs:
        assert panel["datasource"] == {"type": "victoriametrics-logs-datasource", "uid": "victorialogs"}, uid
        assert [(t["queryType"], t["datasource"]["uid"]) for t in panel["targets"]] == [("instant", "victorialogs")]


def _unknown_names(dashboards: tuple[Dashboard, ...]) -> list[str]:
    known = _known_names()
    found = []
    for d in dashboards:
        for panel in dashboard_json(d)["panels"]:
            for target in (t for t in panel["targets"] if _is_promql(t)):
                names = metric_names(target["expr"])
                assert names, f"{d.uid} / {panel['title']}: no name found in {target['expr']}"
                if names - known:
                    found.append(f"{d.uid} / {panel['title']}: {sorted(names - known)}")
    return found


def test_every_panel_names_only_catalogue_metrics_recording_rules_or_stack_series() -> None:
    unknown = _unknown_names(DASHBOARDS)
    assert not unknown, "panels reference names outside the catalogue:\n" + "\n".join(unknown)


def test_a_typo_in_a_panel_query_is_caught() -> None:
    typo = Dashboard("typo", "Typo", (Panel("Requests", (("sum(rate(gateway_requsts_total[5m]))", "req/s"),)),))
    assert _unknown_names((typo,)) == ["typo / Requests: ['gateway_requsts_total']"]


def test_panels_fit_the_grid_without_overlap() -> None:
    for d in DASHBOARDS:
        cells: set[tuple[int, int]] = set()
        for panel in dashboard_json(d)["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, (d.uid, panel["title"])
            cells |= area

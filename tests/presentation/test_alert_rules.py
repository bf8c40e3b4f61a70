"""The design's alerts, evaluated by the real Prometheus rule engine (`promtool test rules`) and routed by
the real Alertmanager configuration (`amtool`; its business hours are asked of a running Alertmanager in
test_alert_business_hours.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawdbot_otel.conventions import METRICS_BY_NAME
from clawdbot_otel.presentation import ALERTS, prometheus_rules_yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "clawdbot.yml"
STACK_RULES = ROOT / "deploy" / "prometheus" / "rules" / "stack.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

#: The design's "Alert Routing" table as receivers, in routing-tree order.
DESIGN_RECEIVERS = {
    "critical": ["critical-immediate"],  # immediate, at any time
    "warning": ["slack-aibot-chat", "warning-digest"],  # #aibot-chat in business hours, batched otherwise
    "info": ["log-only"],
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus / prometheus-alertmanager (clawdbot-otel stack build)")
    return path


def _p(name: str) -> str:
    return METRICS_BY_NAME[name].prometheus_name


def _expected(alertname: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rule = next(a for a in ALERTS if a.name == alertname)
    annotations = {"summary": rule.summary, "design_condition": rule.design_condition}
    if rule.note:
        annotations["note"] = rule.note
    return [{"exp_labels": {"severity": rule.severity.lower(), **(labels or {})}, "exp_annotations": annotations}]


def _case(series: dict[str, str], eval_time: str, alertname: str, fires: bool) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": eval_time, "alertname": alertname, "exp_alerts": _expected(alertname) if fires else []}
        ],
    }


def _buckets(name: str, counts: dict[str, str]) -> dict[str, str]:
    return {f'{_p(name)}_bucket{{le="{le}"}}': values for le, values in counts.items()}


def _gateway(instance: str) -> str:
    return f'{_p("gateway_uptime_seconds")}{{job="clawdbot-gateway",instance="{instance}"}}'


CASES = [
    # GatewayDown: no series at all; a fresh series; a series that stopped being exported.
    _case({f"{_p('spawn_queue_depth')}": "0x10"}, "2m", "GatewayDown", True),
    _case({_p("gateway_uptime_seconds"): "0+60x10"}, "8m", "GatewayDown", False),
    _case({_p("gateway_uptime_seconds"): "0+60x3 _x10"}, "7m", "GatewayDown", True),
    {   # Two gateways, gw-b stops after 3m: it alone fires, while its last sample is within the 5m lookback
        # (6m), after the series has left it (20m), and no longer an hour after its last sample (70m).
        "interval": "1m",
        "input_series": [{"series": _gateway("gw-a"), "values": "0+60x80"},
                         {"series": _gateway("gw-b"), "values": "0+60x3 _x76"}],
        "alert_rule_test": [
            *({"eval_time": t, "alertname": "GatewayDown",
               "exp_alerts": _expected("GatewayDown", {"job": "clawdbot-gateway", "instance": "gw-b"})}
              for t in ("6m", "20m")),
            {"eval_time": "70m", "alertname": "GatewayDown", "exp_alerts": []},
        ],
    },
    # HighErrorRate: 10% failed requests fires, 1% does not.
    _case({f'{_p("gateway_requests_total")}{{method="agent",status="success"}}': "0+90x20",
           f'{_p("gateway_requests_total")}{{method="agent",status="failure"}}': "0+10x20"}, "10m", "HighErrorRate", True),
    _case({f'{_p("gateway_requests_total")}{{method="agent",status="success"}}': "0+99x20",
           f'{_p("gateway_requests_total")}{{method="agent",status="failure"}}': "0+1x20"}, "10m", "HighErrorRate", False),
    # HighLatency: most tasks between 60 and 120 s fires; all under 30 s does not.
    _case(_buckets("task_latency_seconds", {"30": "0x20", "60": "0+1x20", "120": "0+10x20", "+Inf": "0+10x20"}),
          "10m", "HighLatency", True),
    _case(_buckets("task_latency_seconds", {"30": "0+10x20", "60": "0+10x20", "120": "0+10x20", "+Inf": "0+10x20"}),
          "10m", "HighLatency", False),
    # QueueBacklog: > 20 for 5 minutes fires; a 3-minute spike does not.
    _case({_p("spawn_queue_depth"): "25x10"}, "6m", "QueueBacklog", True),
    _case({_p("spawn_queue_depth"): "25x3 5x6"}, "6m", "QueueBacklog", False),
    # StaleHeartbeats: 3 of 10 stale fires, 1 of 10 does not.
    _case({_p("heartbeat_stale_current"): "3x5", _p("heartbeat_active"): "10x5"}, "2m", "StaleHeartbeats", True),
    _case({_p("heartbeat_stale_current"): "1x5", _p("heartbeat_active"): "10x5"}, "2m", "StaleHeartbeats", False),
    # HighMemoryUsage: two processes using 90% of the host's memory.
    _case({f'{_p("resource_memory_used_bytes")}{{process="gateway"}}': "500x5",
           f'{_p("resource_memory_used_bytes")}{{process="scheduler"}}': "400x5",
           _p("resource_memory_total"): "1000x5"}, "2m", "HighMemoryUsage", True),
]


@pytest.mark.tools
def test_rule_file_is_generated_from_the_catalogue_and_valid() -> None:
    assert RULES.read_text() == prometheus_rules_yaml(), "stale: run `clawdbot-otel rules --write`"
    subprocess.run([_tool("promtool"), "check", "rules", str(RULES)], check=True, capture_output=True)


@pytest.mark.tools
def test_alerts_fire_exactly_when_the_design_says(tmp_path: Path) -> None:
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            *CASES,
            {   # the design's spawn_queue_wait_p99, as a recording rule: all waits in (30, 45] -> 44.85
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in _buckets(
                    "spawn_queue_latency_seconds", {"15": "0x20", "30": "0x20", "45": "0+6x20", "+Inf": "0+6x20"}
                ).items()],
                "promql_expr_test": [
                    {"expr": "spawn_queue_wait_p99", "eval_time": "10m", "exp_samples": [{"labels": "spawn_queue_wait_p99", "value": 44.85}]}
                ],
            },
        ],
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run([_tool("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _alertmanager() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER.read_text())
    return config


@pytest.mark.tools
@pytest.mark.parametrize(("severity", "receivers"), DESIGN_RECEIVERS.items())
def test_alertmanager_routes_each_severity_as_the_design_says(severity: str, receivers: list[str]) -> None:
    amtool = _tool("amtool")
    subprocess.run([amtool, "check-config", str(ALERTMANAGER)], check=True, capture_output=True)
    proc = subprocess.run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                           f"severity={severity}", "alertname=Any"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().split(",") == receivers


def test_every_rule_severity_has_a_route_of_its_own() -> None:
    # A severity outside the table would fall through to the root route (log only) without anyone noticing.
    rules = [rule for path in (RULES, STACK_RULES) for group in yaml.safe_load(path.read_text())["groups"]
             for rule in group["rules"] if "alert" in rule]
    unrouted = {rule["alert"]: rule.get("labels", {}).get("severity") for rule in rules
                if rule.get("labels", {}).get("severity") not in DESIGN_RECEIVERS}
    assert not unrouted, f"alerts whose severity has no route: {unrouted}"


def test_only_warnings_follow_the_business_hours() -> None:
    routes = _alertmanager()["route"]["routes"]

    def routes_for(severity: str) -> list[dict[str, Any]]:
        return [r for r in routes if r.get("matchers") == [f'severity="{severity}"']]

    timed = ("mute_time_intervals", "active_time_intervals")
    for severity in ("critical", "info"):
        assert routes_for(severity), severity
        assert not any(key in r for r in routes_for(severity) for key in timed), f"{severity} must not be timed"
    assert not any(key in _alertmanager()["route"] for key in timed)
    slack, digest = routes_for("warning")
    # #aibot-chat is muted off-hours (what still fires is sent at 09:00); the digest takes the rest.
    assert (slack["receiver"], slack.get("mute_time_intervals"), slack.get("continue")) == (
        "slack-aibot-chat", ["off-hours"], True)
    assert "active_time_intervals" not in slack
    assert (digest["receiver"], digest.get("active_time_intervals")) == ("warning-digest", ["off-hours"])
    assert "mute_time_intervals" not in digest

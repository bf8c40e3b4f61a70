"""Grafana dashboards for the design's six summary views, generated from the catalogue.

Every query names metrics through the catalogue's Prometheus names, so a dashboard cannot drift from
what the SDK exports. `clawdbot-otel dashboards --write deploy/grafana/dashboards` regenerates the JSON
that Grafana provisions; a test runs every panel query against the real Prometheus of the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conventions import METRICS_BY_NAME

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "dashboard_json"]

_DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def _p(name: str) -> str:
    return METRICS_BY_NAME[name].prometheus_name


def _rate(name: str, by: str = "", window: str = "5m", selector: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({_p(name)}{selector}[{window}]))"


def _quantile(q: float, name: str, by: str = "", window: str = "5m") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({_p(name)}_bucket[{window}])))"


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]
    """(PromQL, legend) pairs."""
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]


DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard("clawdbot-overview", "Clawdbot / Overview", (
        Panel("Gateway up for", ((f"max({_p('gateway_uptime_seconds')})", "uptime"),), "stat", "s", 6),
        Panel("Request success (1h)", (("clawdbot:gateway_request_success_ratio:rate1h", "success"),), "stat",
              "percentunit", 6),
        Panel("Request latency p95", (("clawdbot:gateway_request_latency_seconds:p95_5m", "p95"),), "stat", "s", 6),
        Panel("Active connections", ((f"sum({_p('gateway_active_connections')})", "connections"),), "stat",
              "short", 6),
        Panel("Requests by method", ((_rate("gateway_requests_total", "method", "1m"), "{{method}}"),),
              unit="reqps"),
        Panel("Request latency (p50, p95, p99)", tuple(
            (_quantile(q, "gateway_request_latency_seconds"), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)
        ), unit="s"),
        Panel("Errors by type", ((_rate("gateway_errors_total", "error_type"), "{{error_type}}"),), unit="ops"),
        Panel("Throughput (rolling 1m)", ((f"sum({_p('gateway_throughput_requests_per_second')})", "req/s"),),
              unit="reqps"),
    )),
    Dashboard("clawdbot-tasks", "Clawdbot / Tasks", (
        Panel("Tasks completed (24h) by status",
              ((f"sum by (status) (increase({_p('task_completion_total')}[24h]))", "{{status}}"),), "bargauge"),
        Panel("Completion rate (24h rolling)", ((f"max({_p('task_completion_rate')})", "rate"),), "gauge",
              "percentunit"),
        Panel("Validation passes by layer", ((_rate("task_validation_passes", "layer"), "{{layer}}"),), unit="ops"),
        Panel("Validation failures by layer", ((_rate("task_validation_failures", "layer"), "{{layer}}"),),
              unit="ops"),
        Panel("Task duration p95 by phase", ((_quantile(0.95, "task_duration_seconds", "phase"), "{{phase}}"),),
              unit="s"),
        Panel("Task latency p95 (alert at 60 s)", ((_quantile(0.95, "task_latency_seconds"), "p95"),), unit="s"),
    )),
    Dashboard("clawdbot-sessions", "Clawdbot / Sessions", (
        Panel("Active sessions by type", ((f"sum by (type) ({_p('session_active')})", "{{type}}"),)),
        Panel("Sessions started by model", ((_rate("session_total", "model"), "{{model}}"),), unit="ops"),
        Panel("Session duration p95 by type", ((_quantile(0.95, "session_duration_seconds", "type"), "{{type}}"),),
              unit="s"),
        Panel("Tokens by model and type",
              ((_rate("session_tokens_used", "model, token_type"), "{{model}} {{token_type}}"),)),
        Panel("Cost (USD per hour) by model", ((f"3600 * {_rate('session_cost_usd_total', 'model')}", "{{model}}"),),
              unit="currencyUSD"),
        Panel("Tool calls by tool and status",
              ((_rate("session_tool_calls_total", "tool_name, status"), "{{tool_name}} {{status}}"),), unit="ops"),
        Panel("Session errors by type", ((_rate("session_errors_total", "error_type"), "{{error_type}}"),),
              unit="ops"),
        Panel("Scheduler jobs by name and status",
              ((_rate("scheduler_jobs_total", "job_name, status"), "{{job_name}} {{status}}"),), unit="ops"),
    )),
    Dashboard("clawdbot-queues", "Clawdbot / Queues", (
        Panel("Spawn queue depth", ((f"max({_p('spawn_queue_depth')})", "pending"),)),
        Panel("Spawn latency p95 / p99", (
            ("clawdbot:spawn_queue_latency_seconds:p95_5m", "p95"), ("spawn_queue_wait_p99", "p99"),
        ), unit="s"),
        Panel("Spawn requests by status", ((_rate("spawn_requests_total", "status"), "{{status}}"),), unit="ops"),
        Panel("Active sub-agents by model", ((f"sum by (model) ({_p('spawn_subagent_active')})", "{{model}}"),)),
        Panel("Undelivered inbox messages", ((f"sum by (to_agent) ({_p('inbox_undelivered_messages')})",
                                              "{{to_agent}}"),)),
        Panel("Message delivery latency p95", ((_quantile(0.95, "inbox_delivery_latency_seconds"), "p95"),),
              unit="s"),
        Panel("Messages by event", ((_rate("inbox_messages_total", "event"), "{{event}}"),), unit="ops"),
        Panel("Heartbeats: active and stale", (
            (f"sum({_p('heartbeat_active')})", "active"), (f"sum({_p('heartbeat_stale_current')})", "stale"),
        )),
    )),
    Dashboard("clawdbot-resources", "Clawdbot / Resources", (
        Panel("Memory used by process", ((f"sum by (process) ({_p('resource_memory_used_bytes')})",
                                          "{{process}}"),), unit="bytes"),
        Panel("Memory used / total", ((f"sum({_p('resource_memory_used_bytes')}) / max({_p('resource_memory_total')})",
                                       "used"),), "gauge", "percentunit"),
        Panel("CPU by process", ((f"sum by (process) ({_p('resource_cpu_percent')})", "{{process}}"),),
              unit="percent"),
        Panel("Disk used and free", ((f"sum by (path) ({_p('resource_disk_used_bytes')})", "used {{path}}"),
                                     (f"sum by (path) ({_p('resource_disk_free_bytes')})", "free {{path}}")),
              unit="bytes"),
        Panel("Gateway memory", ((f"sum by (type) ({_p('gateway_memory_bytes')})", "{{type}}"),), unit="bytes"),
        Panel("Gateway CPU", ((f"max({_p('gateway_cpu_percent')})", "cpu"),), unit="percent"),
    )),
    Dashboard("clawdbot-alerts", "Clawdbot / Alerts", (
        Panel("Firing alerts", (('sum by (alertname, severity) (ALERTS{alertstate="firing"})',
                                 "{{alertname}} ({{severity}})"),), "table", width=24),
        Panel("Telemetry dropped by reason", ((_rate("clawdbot_otel_dropped_total", "reason"), "{{reason}}"),),
              unit="ops"),
        Panel("Bad input by source", ((_rate("clawdbot_otel_source_errors_total", "source, reason"),
                                       "{{source}} {{reason}}"),), unit="ops"),
    )),
)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": _DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    panels, x, y = [], 0, 0
    for i, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append(_panel_json(panel, i, x, y))
        x += panel.width
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["clawdbot", "generated"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": True,
        "links": [{"title": "Clawdbot", "type": "dashboards", "tags": ["clawdbot"], "asDropdown": True}],
        "panels": panels,
    }

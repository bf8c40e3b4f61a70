"""Grafana dashboards for the design's six summary views, generated from the catalogue.

Every query names metrics through the catalogue's Prometheus names or the KPI recording rules of the
conventions, looked up here so that a typo fails at import; the only other series are Prometheus' own
`ALERTS` and `ALERTS_FOR_STATE`. `clawdbot-otel dashboards --write deploy/grafana/dashboards` regenerates the
JSON that Grafana provisions. tests/presentation checks that every query parses (promtool), names nothing
else, and that the derived Overview and Alerts queries compute what their titles say (promtool test rules);
the stack's end-to-end test requires data from every other query, except the Alerts view and recording
rules, after a demo run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, gauge, logs, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.builders.common import TableSortByFieldState
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    GridPos,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from ._queries import ALERT_ACTIVATIONS, OVERVIEW, Query
from ._queries import ALERTS_SERIES as _ALERTS
from ._queries import metric as _p
from ._queries import quantile as _quantile
from ._queries import rate as _rate
from ._queries import recorded as _rule

__all__ = ["DASHBOARDS", "LOGS_WARN_AND_ABOVE", "Dashboard", "Panel", "dashboard_json"]

_DATASOURCES = {
    "prometheus": DataSourceRef(type_val="prometheus", uid="prometheus"),
    "victorialogs": DataSourceRef(type_val="victoriametrics-logs-datasource", uid="victorialogs"),
}
_DATASOURCE = _DATASOURCES["prometheus"]
#: LogsQL of the log panels: WARN and above (OTel severity numbers 13-24), any service.
LOGS_WARN_AND_ABOVE = "severity_number:range[13, 24]"
_BUILDERS: dict[str, Callable[[], Any]] = {"timeseries": timeseries.Panel, "stat": stat.Panel, "gauge": gauge.Panel,
                                           "bargauge": bargauge.Panel, "table": table.Panel,
                                           "state-timeline": statetimeline.Panel, "logs": logs.Panel}
# Panels that show one value per series ask Prometheus for one instant, not a series over the range.
_INSTANT_KINDS = frozenset({"stat", "gauge", "bargauge", "table"})


def _shown(*keys: str) -> tuple[tuple[str, str], ...]:
    """Overview queries by key, as (PromQL, legend): the same strings `top` and `report` evaluate."""
    queries: list[Query] = [OVERVIEW[key] for key in keys]
    return tuple((q.promql, q.legend) for q in queries)


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]
    """(PromQL, legend) pairs; for a table the legend names the value column."""
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    description: str = ""
    datasource: str = "prometheus"
    """`prometheus` (queries are PromQL) or `victorialogs` (a `logs` panel; queries are LogsQL)."""

    def __post_init__(self) -> None:
        if self.kind == "table" and len(self.queries) != 1:
            raise ValueError(f"table panel {self.title!r} needs exactly one query (it names the value column)")


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]


def _recent_alerts(width: int) -> Panel:
    return Panel("Recent alerts (24h)", _shown("recent_alerts"),
                 "table", "dateTimeAsIso", width,
                 "Every alert that was pending or firing in the last 24 h, by when it last became active.")


DASHBOARDS: tuple[Dashboard, ...] = (
    # The design's layout: system health | task status; request latency (24h); active sessions | queue
    # depth; recent alerts. Traffic and errors follow below.
    Dashboard("clawdbot-overview", "Clawdbot / Overview", (
        Panel("Gateway up", _shown("gateway_up"), "stat", "bool_yes_no", 2,
              "Yes while a gateway refreshed its uptime within 60 s (the GatewayDown alert's test)."),
        Panel("Uptime (24h)", _shown("uptime_ratio"), "stat", "percentunit", 2,
              "Share of 15 s steps with a gateway sample since it was first seen in the last 24 h."),
        Panel("Gateway up for", _shown("uptime_seconds"), "stat", "s", 2),
        Panel("Request success (1h)", _shown("success_ratio"), "stat", "percentunit", 2),
        Panel("Request latency p95", _shown("latency_p95"), "stat", "s", 2),
        Panel("Active connections", _shown("connections"), "stat", "short", 2),
        Panel("Task status", _shown("completed", "in_progress", "failed", "pending_validation"), "stat",
              description="In progress: tasks with an active heartbeat. Pending validation: tasks completed "
              "successfully in the last 24 h without an L3 validation result in that time."),
        Panel("Request latency (p50, p95, p99)",
              _shown("latency_p50_series", "latency_p95_series", "latency_p99_series"), unit="s", width=24),
        Panel("Active sessions", _shown("sessions"), "stat"),
        Panel("Queue depth", _shown("queue_spawn", "queue_inbox", "queue_processing"), "stat",
              description="Spawn: requests without a final response. Inbox: messages not yet archived. "
              "Processing: spawned sub-agents still running."),
        _recent_alerts(24),
        Panel("Requests by method", ((_rate("gateway_requests_total", "method", "1m"), "{{method}}"),),
              unit="reqps"),
        Panel("Errors by type", ((_rate("gateway_errors_total", "error_type"), "{{error_type}}"),), unit="ops"),
        Panel("Throughput (rolling 1m)", ((f"sum({_p('gateway_throughput_requests_per_second')})", "req/s"),),
              unit="reqps"),
        Panel("Warnings and errors (log store)", ((LOGS_WARN_AND_ABOVE, ""),), "logs", width=24,
              datasource="victorialogs",
              description="The newest WARN, ERROR and FATAL records from VictoriaLogs; each links to its trace."),
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
            (_rule("clawdbot:spawn_queue_latency_seconds:p95_5m"), "p95"), (_rule("spawn_queue_wait_p99"), "p99"),
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
        Panel("Firing now", ((f'sum by (alertname, severity) ({_ALERTS}{{alertstate="firing"}})', "instances"),),
              "table"),
        _recent_alerts(12),
        Panel("Firing history", ((f'max by (alertname, severity) ({_ALERTS}{{alertstate="firing"}})',
                                  "{{alertname}} ({{severity}})"),), "state-timeline", width=24),
        Panel("Activations (24h)", ((ALERT_ACTIVATIONS.replace("{w}", "24h"),
                                     "{{alertname}} ({{severity}})"),), "bargauge",
              description="How often each alert became active (pending, then perhaps firing) in the last 24 h."),
        Panel("Telemetry dropped by reason", ((_rate("clawdbot_otel_dropped_total", "reason"), "{{reason}}"),),
              unit="ops"),
        Panel("Bad input by source", ((_rate("clawdbot_otel_source_errors_total", "source, reason"),
                                       "{{source}} {{reason}}"),), unit="ops"),
    )),
)


def _query(ref_id: str, expr: str, legend: str, kind: str) -> prometheus.Dataquery:
    if kind == "logs":
        # The VictoriaLogs plugin's query model (refId, datasource, expr, queryType) is a subset of
        # Prometheus'; the SDK ships no builder of its own for it.
        return prometheus.Dataquery().ref_id(ref_id).datasource(_DATASOURCES["victorialogs"]).expr(expr) \
            .query_type("instant")
    query = prometheus.Dataquery().ref_id(ref_id).datasource(_DATASOURCE).expr(expr).legend_format(legend)
    query = query.instant() if kind in _INSTANT_KINDS else query.range()
    return query.format(PromQueryFormat.TABLE if kind == "table" else PromQueryFormat.TIME_SERIES)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> Any:
    """The panel through Grafana's own SDK (its builder per panel type)."""
    builder = _BUILDERS[panel.kind]().id(panel_id).title(panel.title).description(panel.description)
    builder = builder.datasource(_DATASOURCES[panel.datasource]).grid_pos(GridPos(h=8, w=panel.width, x=x, y=y))
    if panel.kind != "logs":
        builder = builder.unit(panel.unit)
    for i, (expr, legend) in enumerate(panel.queries):
        builder = builder.with_target(_query(chr(ord("A") + i), expr, legend, panel.kind))
    if panel.kind == "table":
        # An instant table query comes back as Time, labels..., Value: hide the evaluation time and name the
        # value column after the legend; the largest value first.
        value = panel.queries[0][1]
        builder = builder.sort_by([TableSortByFieldState().display_name(value).desc(True)]).with_transformation(
            DataTransformerConfig(id_val="organize",
                                  options={"excludeByName": {"Time": True}, "renameByName": {"Value": value}}))
    return builder


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana provisions it, built with grafana-foundation-sdk and encoded by it."""
    builder = (
        grafana.Dashboard(dashboard.title).uid(dashboard.uid).tags(["clawdbot", "generated"]).timezone("utc")
        .refresh("30s").time("now-24h", "now")  # the design's views are over 24 h
        .editable().link(grafana.DashboardLink("Clawdbot").type(DashboardLinkType.DASHBOARDS)
                         .tags(["clawdbot"]).as_dropdown(True))
    )
    x, y = 0, 0
    for i, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        builder = builder.with_panel(_panel(panel, i, x, y))
        x += panel.width
    data: dict[str, Any] = _without_nulls(json.loads(JSONEncoder(sort_keys=True).encode(builder.build())))
    return data


def _without_nulls(value: Any) -> Any:
    # The SDK encodes options nobody set as null; Grafana reads an absent key as "the default", not null.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value

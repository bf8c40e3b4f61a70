"""The PromQL behind every number that `top`, `report` and the Grafana Overview show, defined once.

Metric names come from the catalogue (a typo fails at import). `top` and `report` evaluate these
strings; the Overview dashboard embeds the same strings, so the terminal, the report and Grafana cannot
disagree. KPI queries take the report's period as their window.
"""

from __future__ import annotations

from dataclasses import dataclass

from clawdbot_otel.conventions import METRICS_BY_NAME, SELF_METRICS, nearest

from ._alerts import KPI_RECORDING_RULES

__all__ = [
    "ALERTS_FOR_STATE",
    "ALERTS_SERIES",
    "ALERT_ACTIVATIONS",
    "ALERT_LAST_ACTIVE",
    "CHARTS",
    "KPIS",
    "OVERVIEW",
    "SESSION_LIMITS",
    "TOOL_ERROR_RATES",
    "TOP_MODELS_BY_COST",
    "TOP_MODELS_BY_TOKENS",
    "Kpi",
    "Query",
    "count_24h",
    "metric",
    "quantile",
    "rate",
    "recorded",
    "uptime_ratio",
]

_PROM = {m.name: m.prometheus_name for m in (*METRICS_BY_NAME.values(), *SELF_METRICS)}
_RULE_NAMES = tuple(name for name, _ in KPI_RECORDING_RULES)
# Written by Prometheus for every pending or firing alert; ALERTS_FOR_STATE's value is the alert's
# activation time (Unix seconds), which survives the alert resolving.
ALERTS_SERIES = "ALERTS"
ALERTS_FOR_STATE = "ALERTS_FOR_STATE"
# OpenClaw's default concurrency limits (agents.defaults.maxConcurrent, subagents.maxConcurrent), the
# design's "Main: 2/4, Sub: 5/8"; cron runs have none.
SESSION_LIMITS: dict[str, int] = {"main": 4, "sub": 8}


def metric(name: str) -> str:
    """The Prometheus name of catalogue metric `name`."""
    prom = _PROM.get(name)
    if prom is None:
        raise KeyError(f"{name!r} is not in the catalogue; nearest: {nearest(name, list(_PROM))}")
    return prom


def recorded(name: str) -> str:
    """A KPI recording rule's name, checked to exist."""
    if name not in _RULE_NAMES:
        raise KeyError(f"{name!r} is not a KPI recording rule; nearest: {nearest(name, _RULE_NAMES)}")
    return name


def rate(name: str, by: str = "", window: str = "5m", selector: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({metric(name)}{selector}[{window}]))"


def quantile(q: float, name: str, by: str = "", window: str = "5m", fn: str = "rate") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({fn}({metric(name)}_bucket[{window}])))"


def count_24h(name: str, selector: str = "", window: str = "24h") -> str:
    # A counter has no series before its first event: "none in 24 h" must read 0, not "No data".
    return f"(sum(increase({metric(name)}{selector}[{window}])) or vector(0))"


def _ratio(num: str, den: str) -> str:
    return f"({num}) / ({den})"


# Resolution of the subqueries: the export interval, so a stack up for a minute already has points.
_STEP_S = 15


def uptime_ratio(window: str) -> str:
    """Share of the 15-second steps since the gateway was first seen in `window` in which it reported.

    A stopped gateway reports nothing, so downtime is a step without a sample (Prometheus' 5-minute
    lookback hides shorter gaps). Counted from its first sample, so a stack started an hour ago is not
    "down" for the 23 hours before.
    """
    up = f"max({metric('gateway_uptime_seconds')})"
    return (f"clamp_max(count_over_time({up}[{window}:{_STEP_S}s]) / "
            f"(1 + floor((time() - min_over_time(timestamp({up})[{window}:{_STEP_S}s])) / {_STEP_S})), 1)")


@dataclass(frozen=True, slots=True)
class Query:
    """One number (or one series per label set) of the Overview, with its legend."""

    key: str
    promql: str
    legend: str


#: When each alert last became active in the window (Unix seconds).
ALERT_LAST_ACTIVE = f"max by (alertname, severity) (max_over_time({ALERTS_FOR_STATE}[{{w}}]))"

# Completed successfully but without a result of L3, the last validation layer, in the same 24 h.
# There is no validation-queue metric, so this is derived and clamped at 0 (validations in the window of
# tasks completed before it would make it negative).
_PENDING_VALIDATION = "clamp_min({} - {} - {}, 0)".format(
    count_24h("task_completion_total", '{status="success"}'),
    count_24h("task_validation_passes", '{layer="L3"}'),
    count_24h("task_validation_failures", '{layer="L3"}'),
)

#: The design's "Dashboard Layout", box by box. `top` shows these; the Overview dashboard embeds them.
OVERVIEW: dict[str, Query] = {q.key: q for q in (
    # SYSTEM HEALTH: 1 while a gateway refreshed its uptime within 60 s (the GatewayDown alert's test)
    Query("gateway_up", f"min(time() - timestamp({metric('gateway_uptime_seconds')})) < bool 60", "up"),
    Query("uptime_ratio", uptime_ratio("24h"), "uptime (24h)"),
    Query("uptime_seconds", f"max({metric('gateway_uptime_seconds')})", "uptime"),
    Query("success_ratio", recorded("clawdbot:gateway_request_success_ratio:rate1h"), "success"),
    Query("latency_p95", recorded("clawdbot:gateway_request_latency_seconds:p95_5m"), "p95"),
    Query("connections", f"sum({metric('gateway_active_connections')})", "connections"),
    # TASK STATUS
    Query("completed", count_24h("task_completion_total", '{status="success"}'), "completed (24h)"),
    Query("in_progress", f"sum({metric('heartbeat_active')})", "in progress"),
    Query("failed", count_24h("task_completion_total", '{status!="success"}'), "failed (24h)"),
    Query("pending_validation", _PENDING_VALIDATION, "pending validation"),
    # REQUEST LATENCY (24h), as range queries (the p95 stat above is the recorded rule of the same
    # expression, which has no points before the rule first ran)
    *(Query(f"latency_p{int(q * 100)}_series", quantile(q, "gateway_request_latency_seconds"), f"p{int(q * 100)}")
      for q in (0.5, 0.95, 0.99)),
    # ACTIVE SESSIONS, one series per type
    Query("sessions", f"sum by (type) ({metric('session_active')})", "{{type}}"),
    # QUEUE DEPTH
    Query("queue_spawn", f"max({metric('spawn_queue_depth')})", "spawn"),
    Query("queue_inbox", f"sum({metric('inbox_undelivered_messages')})", "inbox"),
    Query("queue_processing", f"sum({metric('spawn_subagent_active')})", "processing"),
    # RECENT ALERTS (Prometheus' own record; `top` asks Alertmanager for what is active now)
    Query("recent_alerts", "1000 * " + ALERT_LAST_ACTIVE.replace("{w}", "24h"), "last active"),
)}


@dataclass(frozen=True, slots=True)
class Kpi:
    """A row of the design's KPI tables: the query over the report's period and its bounds.

    `target` and `threshold` are the design's; `higher_is_better` says which side passes. A value within
    the target is "met", within the threshold "warning", beyond it "breached".
    """

    table: str
    name: str
    target_text: str
    target: float
    threshold: float
    higher_is_better: bool
    unit: str
    """ratio, seconds or count."""
    promql_template: str
    """PromQL with `{w}` for the period (24h, 7d, ...)."""

    def promql(self, window: str) -> str:
        return self.promql_template.replace("{w}", window)

    def verdict(self, value: float) -> str:
        def within(bound: float) -> bool:
            return value >= bound if self.higher_is_better else value <= bound
        return "met" if within(self.target) else "warning" if within(self.threshold) else "breached"


def _over(expr: str, fn: str = "max") -> str:
    return f"{fn}_over_time(({expr})[{{w}}:{_STEP_S}s])"


_STALE_SHARE = f"sum({metric('heartbeat_stale_current')}) / sum({metric('heartbeat_active')})"

#: The design's four KPI tables ("Key Performance Indicators"), in order.
KPIS: tuple[Kpi, ...] = (
    Kpi("System Health", "Gateway Uptime", "99.9%", 0.999, 0.995, True, "ratio", uptime_ratio("{w}")),
    Kpi("System Health", "Request Success Rate", "99%", 0.99, 0.95, True, "ratio", _ratio(
        f'sum(increase({metric("gateway_requests_total")}{{status="success"}}[{{w}}]))',
        f"sum(increase({metric('gateway_requests_total')}[{{w}}]))")),
    Kpi("System Health", "Average Latency (P95)", "<500ms", 0.5, 1.0, False, "seconds",
        quantile(0.95, "gateway_request_latency_seconds", window="{w}", fn="increase")),
    Kpi("System Health", "Active Sessions (peak)", "<12", 12, 16, False, "count",
        _over(f"sum({metric('session_active')})")),
    Kpi("Task Execution", "Task Completion Rate", "90%", 0.9, 0.8, True, "ratio", _ratio(
        f'sum(increase({metric("task_completion_total")}{{status="success"}}[{{w}}]))',
        f"sum(increase({metric('task_completion_total')}[{{w}}]))")),
    Kpi("Task Execution", "Validation Pass Rate", "95%", 0.95, 0.85, True, "ratio", _ratio(
        f"sum(increase({metric('task_validation_passes')}[{{w}}]))",
        f"sum(increase({metric('task_validation_passes')}[{{w}}])) "
        f"+ sum(increase({metric('task_validation_failures')}[{{w}}]))")),
    Kpi("Task Execution", "Stale Task Rate (peak)", "<5%", 0.05, 0.10, False, "ratio", _over(_STALE_SHARE)),
    Kpi("Task Execution", "Spawn Latency (P95)", "<30s", 30, 60, False, "seconds",
        quantile(0.95, "spawn_queue_latency_seconds", window="{w}", fn="increase")),
    Kpi("Resource", "Memory Usage (peak)", "<70%", 0.7, 0.85, False, "ratio", _over(
        f"sum({metric('resource_memory_used_bytes')}) / max({metric('resource_memory_total')})")),
    Kpi("Resource", "CPU Usage (busiest process, average)", "<50%", 0.5, 0.8, False, "ratio",
        f"max(avg_over_time({metric('resource_cpu_percent')}[{{w}}])) / 100"),
    Kpi("Resource", "Disk Usage (peak)", "<70%", 0.7, 0.9, False, "ratio", _over(
        f"max({metric('resource_disk_used_bytes')} / ({metric('resource_disk_used_bytes')} "
        f"+ {metric('resource_disk_free_bytes')}))")),
    Kpi("Resource", "Token Budget (cost / budget)", "within budget", 1.0, 1.1, False, "ratio",
        f"sum(increase({metric('session_cost_usd_total')}[{{w}}])) / {{budget}}"),
    Kpi("Operational", "Queue Depth (peak)", "<5", 5, 20, False, "count",
        _over(f"max({metric('spawn_queue_depth')})")),
    Kpi("Operational", "Heartbeat Health (peak stale share)", "100% current", 0.0, 0.2, False, "ratio",
        _over(_STALE_SHARE)),
    Kpi("Operational", "Message Delivery (P95)", "<1s", 1.0, 5.0, False, "seconds",
        quantile(0.95, "inbox_delivery_latency_seconds", window="{w}", fn="increase")),
)

#: Report tables over the period (`{w}`).
TOP_MODELS_BY_TOKENS = f"topk(10, sum by (model) (increase({metric('session_tokens_used')}[{{w}}])))"
TOP_MODELS_BY_COST = f"topk(10, sum by (model) (increase({metric('session_cost_usd_total')}[{{w}}])))"
TOOL_ERROR_RATES = _ratio(
    f'sum by (tool_name) (increase({metric("session_tool_calls_total")}{{status!="success"}}[{{w}}])) '
    f"or (0 * sum by (tool_name) (increase({metric('session_tool_calls_total')}[{{w}}])))",
    f"sum by (tool_name) (increase({metric('session_tool_calls_total')}[{{w}}]))")
#: How often each alert became active (pending, then perhaps firing) in the window.
ALERT_ACTIVATIONS = f"sum by (alertname, severity) (changes({ALERTS_FOR_STATE}[{{w}}]) + 1)"
#: The report's charts: (title, unit, PromQL) over the period as range queries.
CHARTS: tuple[tuple[str, str, str], ...] = (
    ("Request latency p95", "s", OVERVIEW["latency_p95_series"].promql),
    ("Throughput", "req/s", rate("gateway_requests_total")),
    ("Error rate (failed share of requests)", "ratio",
     _ratio(rate("gateway_requests_total", selector='{status!="success"}'), rate("gateway_requests_total"))),
    ("Tokens", "tokens/s", rate("session_tokens_used")),
)

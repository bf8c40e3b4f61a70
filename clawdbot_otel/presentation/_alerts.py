"""The design's alert rules and KPI recording rules, in PromQL over catalogue names.

Expressions are built from the catalogue's Prometheus names, never typed by hand, so a renamed metric
cannot leave a rule silently matching nothing. Where the design's condition cannot be evaluated as
written, `note` says what changed and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from clawdbot_otel.conventions import METRICS, RECORDING_RULES, SELF_METRICS

__all__ = ["AGGREGATION_RULES", "ALERTS", "KPI_RECORDING_RULES", "LONG_TERM_SERIES", "AlertRule"]

_PROM = {m.name: m.prometheus_name for m in (*METRICS, *SELF_METRICS)}


def _p(name: str) -> str:
    return _PROM[name]


_UPTIME = _p("gateway_uptime_seconds")
# How long a gateway that stopped reporting is still remembered as down rather than removed.
_GATEWAY_GONE_FOR = "1h"


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    severity: str
    expr: str
    for_: str
    summary: str
    design_condition: str
    note: str = ""


ALERTS: tuple[AlertRule, ...] = (
    AlertRule(
        "GatewayDown", "CRITICAL",
        # Per series, so one dead gateway among several fires on its own (with its job/instance labels).
        f"absent({_UPTIME}) or (time() - timestamp({_UPTIME}) > 60) "
        f"or (present_over_time({_UPTIME}[{_GATEWAY_GONE_FOR}]) unless {_UPTIME})",
        "30s", "Gateway is down! Requires immediate attention.",
        "gateway_uptime_seconds == 0 for 30s",
        "A dead gateway reports nothing, so its uptime never reads 0. Per gateway (job, instance = "
        "service.instance.id): fires when its uptime has not been refreshed for 60 s (four export intervals), "
        f"and keeps firing until {_GATEWAY_GONE_FOR} after its last sample (the series leaves Prometheus' "
        "5-minute lookback long before); without labels when no gateway reports at all.",
    ),
    AlertRule(
        "HighErrorRate", "CRITICAL",
        f'sum(rate({_p("gateway_requests_total")}{{status!="success"}}[5m])) '
        f"/ sum(rate({_p('gateway_requests_total')}[5m])) > 0.05",
        "0s", "Error rate exceeds 5% over 5 minutes.",
        "rate(gateway_errors_total[5m]) > 0.05",
        "The design's expression is errors per second, not a percentage; the message (5%) is a ratio of "
        "failed to all requests, which is what this computes.",
    ),
    AlertRule(
        "HighLatency", "WARNING",
        f"histogram_quantile(0.95, sum by (le) (rate({_p('task_latency_seconds')}_bucket[5m]))) > 60",
        "0s", "P95 task latency exceeds 60 seconds.",
        "histogram_quantile(0.95, task_latency_seconds) > 60",
        "histogram_quantile needs bucket rates; 60 s is a bucket boundary so the threshold is exact.",
    ),
    AlertRule(
        "QueueBacklog", "WARNING",
        f"max({_p('spawn_queue_depth')}) > 20",
        "5m", "Spawn queue has >20 pending requests for 5+ minutes.",
        "spawn_queue_depth > 20 for 5m",
    ),
    AlertRule(
        "StaleHeartbeats", "WARNING",
        f"sum({_p('heartbeat_stale_current')}) / sum({_p('heartbeat_active')}) > 0.2",
        "0s", "More than 20% of heartbeats are stale.",
        "heartbeat_stale_total / heartbeat_active > 0.2",
        "heartbeat_stale_total is a counter that only grows; the ratio uses the current stale gauge.",
    ),
    AlertRule(
        "HighMemoryUsage", "INFO",
        f"sum({_p('resource_memory_used_bytes')}) / max({_p('resource_memory_total')}) > 0.85",
        "0s", "Memory usage exceeds 85%.",
        "resource_memory_used_bytes / resource_memory_total > 0.85",
    ),
)

#: KPI views as recording rules (dashboards and reports read these names).
KPI_RECORDING_RULES: tuple[tuple[str, str], ...] = (
    *((r.name, r.expr) for r in RECORDING_RULES),
    ("clawdbot:gateway_request_success_ratio:rate1h",
     f'sum(rate({_p("gateway_requests_total")}{{status="success"}}[1h])) '
     f'/ sum(rate({_p("gateway_requests_total")}[1h]))'),
    ("clawdbot:gateway_request_latency_seconds:p95_5m",
     f"histogram_quantile(0.95, sum by (le) (rate({_p('gateway_request_latency_seconds')}_bucket[5m])))"),
    ("clawdbot:spawn_queue_latency_seconds:p95_5m",
     f"histogram_quantile(0.95, sum by (le) (rate({_p('spawn_queue_latency_seconds')}_bucket[5m])))"),
    ("clawdbot:task_completion_ratio:rate24h",
     f'sum(increase({_p("task_completion_total")}{{status="success"}}[24h])) '
     f"/ sum(increase({_p('task_completion_total')}[24h]))"),
    ("clawdbot:task_validation_pass_ratio:rate24h",
     f"sum(increase({_p('task_validation_passes')}[24h])) / (sum(increase({_p('task_validation_passes')}[24h])) "
     f"+ sum(increase({_p('task_validation_failures')}[24h])))"),
    ("clawdbot:session_tokens:rate5m", f"sum by (model) (rate({_p('session_tokens_used')}[5m]))"),
)


def _quantiles(metric: str, by: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"clawdbot:{_p(metric)}:p{q}_1m",
         f"histogram_quantile(0.{q}, sum by (le, {by}) (rate({_p(metric)}_bucket[1m])))")
        for q in (50, 95, 99)
    )


#: The design's "Metric Aggregation" table as recording rules (evaluated every minute). With the KPI rules
#: above they are the "aggregated metrics" the long-term Prometheus keeps 90 days (raw samples: 7 days).
AGGREGATION_RULES: tuple[tuple[str, str], ...] = (
    # Request count: sum over 1 minute, per gateway (job, instance)
    ("clawdbot:gateway_requests:increase1m",
     f"sum by (job, instance, method, status) (increase({_p('gateway_requests_total')}[1m]))"),
    # Latency: P50, P95, P99 over 1 minute
    *_quantiles("gateway_request_latency_seconds", "method"),
    # Error rate: rate over 5 minutes (errors per second, and the failed share of requests)
    ("clawdbot:gateway_errors:rate5m", f"sum by (error_type) (rate({_p('gateway_errors_total')}[5m]))"),
    ("clawdbot:gateway_request_error_ratio:rate5m",
     f'sum(rate({_p("gateway_requests_total")}{{status!="success"}}[5m])) '
     f"/ sum(rate({_p('gateway_requests_total')}[5m]))"),
    # Active sessions: max over 1 minute
    ("clawdbot:session_active:max1m", f"max by (type) (max_over_time({_p('session_active')}[1m]))"),
    # Queue depth: max over 1 minute
    ("clawdbot:spawn_queue_depth:max1m", f"max(max_over_time({_p('spawn_queue_depth')}[1m]))"),
    ("clawdbot:inbox_undelivered_messages:max1m",
     f"max by (to_agent) (max_over_time({_p('inbox_undelivered_messages')}[1m]))"),
    # Resource usage: average over 5 minutes
    ("clawdbot:resource_cpu_percent:avg5m", f"avg by (process) (avg_over_time({_p('resource_cpu_percent')}[5m]))"),
    ("clawdbot:resource_memory_used_bytes:avg5m",
     f"avg by (process) (avg_over_time({_p('resource_memory_used_bytes')}[5m]))"),
    ("clawdbot:resource_disk_used_bytes:avg5m",
     f"avg by (path) (avg_over_time({_p('resource_disk_used_bytes')}[5m]))"),
)

#: Series names the raw Prometheus forwards to the long-term one (remote write, `keep` relabelling):
#: exactly the recording rules' outputs. deploy/prometheus/prometheus.yml repeats it; a test checks.
LONG_TERM_SERIES = "|".join(name for name, _ in (*KPI_RECORDING_RULES, *AGGREGATION_RULES))

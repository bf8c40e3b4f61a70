"""Every metric of the design, defined once.

Names are the design's (`TELEMETRY-SYSTEM.md`, "Metrics Collection" tables, plus the names it uses in
its API reference and alert rules). OTel names carry no unit (the unit field does) so that the
collector's default Prometheus translation gives back the documented name wherever it can.
"""

from __future__ import annotations

from ._model import Kind, LabelSpec, MetricSpec, RecordingRule

__all__ = ["LABELS", "METRICS", "OTHER", "RECORDING_RULES", "SELF_METRICS"]

#: The value that out-of-catalogue and over-cap label values are folded into.
OTHER = "other"


def _enum(name: str, *values: str, description: str = "") -> LabelSpec:
    return LabelSpec(name, frozenset((*values, OTHER)), description)


# The design's Label Standards table, plus `other` for anything outside it. `method` is extended with
# the OpenClaw gateway protocol's methods (the design's `agentTurn`/`spawn` are its own examples).
STATUS = _enum("status", "success", "failure", "timeout", description="Operation result")
METHOD = _enum(
    "method",
    "agentTurn", "spawn",
    "connect", "agent", "agent.wait", "chat.send", "chat.history", "chat.abort", "sessions.list",
    "sessions.usage", "sessions.patch", "sessions.reset", "sessions.delete", "cron.list",
    "cron.status", "cron.run", "cron.runs", "cron.add", "cron.update", "cron.remove", "health",
    "status", "send", "models.list", "tools.invoke", "config.get", "usage.status", "usage.cost",
    description="Request method (gateway protocol method names)",
)
MODEL = _enum("model", "opus", "sonnet", "haiku", description="AI model family")
SESSION_TYPE = _enum("type", "main", "cron", "subagent", description="Session category")
LAYER = _enum("layer", "L1", "L2", "L3", description="Validation layer")
ERROR_TYPE = _enum(
    "error_type", "timeout", "auth", "runtime", "protocol", "model", "tool",
    description="Error category (design: timeout, auth, runtime; ours: protocol, model, tool)",
)
PHASE = LabelSpec("phase", description="Task phase (project-defined, e.g. p1..p3); capped")
JOB_NAME = LabelSpec("job_name", description="Scheduler job name; capped")
TOOL_NAME = LabelSpec("tool_name", description="Tool name; capped")
REASON = LabelSpec("reason", description="Validation failure reason; capped")
PROCESS = LabelSpec("process", description="Process name; capped")
PATH = LabelSpec("path", description="A configured filesystem path; capped")
AGENT_FROM = LabelSpec("from_agent", description="Sending agent id; capped")
AGENT_TO = LabelSpec("to_agent", description="Receiving agent id; capped")
MEMORY_TYPE = _enum("type", "rss", "vms", "heap", description="Memory kind")
TOKEN_TYPE = _enum(
    "token_type", "input", "output", "cache_read", "cache_write",
    description="Token direction (GenAI gen_ai.token.type, plus cache reads and writes)",
)
MESSAGE_EVENT = _enum("event", "created", "delivered", "archived", "failed", description="Inbox event")

LABELS: tuple[LabelSpec, ...] = (
    STATUS, METHOD, MODEL, SESSION_TYPE, LAYER, ERROR_TYPE, PHASE, JOB_NAME, TOOL_NAME, REASON,
    PROCESS, PATH, AGENT_FROM, AGENT_TO, MEMORY_TYPE, TOKEN_TYPE, MESSAGE_EVENT,
)

# Bucket boundaries, chosen so that each KPI threshold of the design is a boundary (1 s request
# latency, 60 s spawn and task latency, 5 s message delivery) and histogram_quantile stays exact there.
_REQUEST_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_JOB_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_SESSION_S = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
_TASK_S = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0)
_SPAWN_S = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0)
_HEARTBEAT_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
_DELIVERY_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_TOTAL_NOTE = (
    "Prometheus and OpenMetrics counters end in _total and the collector's translation appends it; "
    "the documented name without it cannot be produced. Query {prom}."
)

M = MetricSpec
K = Kind

METRICS: tuple[MetricSpec, ...] = (
    # --- gateway ---------------------------------------------------------------------------------
    M("gateway_requests_total", "gateway.requests", K.COUNTER, "{request}",
      "Total requests received", "gateway", (METHOD, STATUS)),
    M("gateway_request_latency_seconds", "gateway.request.latency", K.HISTOGRAM, "s",
      "Request processing time", "gateway", (METHOD,), _REQUEST_S),
    M("gateway_throughput_requests_per_second", "gateway.throughput.requests", K.GAUGE,
      "{request}/s", "Requests per second (rolling 1m)", "gateway"),
    M("gateway_active_connections", "gateway.active_connections", K.GAUGE, "{connection}",
      "Current WebSocket connections", "gateway"),
    M("gateway_errors_total", "gateway.errors", K.COUNTER, "{error}", "Total errors", "gateway",
      (ERROR_TYPE,)),
    M("gateway_uptime_seconds", "gateway.uptime", K.GAUGE, "s", "Time since start",
      "gateway"),
    M("gateway_memory_bytes", "gateway.memory", K.GAUGE, "By", "Memory usage",
      "gateway", (MEMORY_TYPE,)),
    M("gateway_cpu_percent", "gateway.cpu", K.GAUGE, "%", "CPU utilization", "gateway"),
    # --- scheduler -------------------------------------------------------------------------------
    M("scheduler_jobs_total", "scheduler.jobs", K.COUNTER, "{job}", "Total jobs executed",
      "scheduler", (JOB_NAME, STATUS)),
    M("scheduler_job_latency_seconds", "scheduler.job.latency", K.HISTOGRAM, "s",
      "Job execution time", "scheduler", (JOB_NAME,), _JOB_S),
    M("scheduler_job_errors_total", "scheduler.job.errors", K.COUNTER, "{error}", "Job failures",
      "scheduler", (JOB_NAME, ERROR_TYPE)),
    M("scheduler_jobs_active", "scheduler.jobs.active", K.UPDOWN_COUNTER, "{job}",
      "Currently running jobs", "scheduler"),
    M("scheduler_next_run_seconds", "scheduler.next_run", K.GAUGE, "s",
      "Time to next scheduled run", "scheduler", (JOB_NAME,)),
    # --- agent sessions --------------------------------------------------------------------------
    M("session_total", "session", K.COUNTER, "{session}", "Total sessions created", "session",
      (SESSION_TYPE, MODEL)),
    M("session_active", "session.active", K.UPDOWN_COUNTER, "{session}", "Active sessions",
      "session", (SESSION_TYPE,)),
    M("session_duration_seconds", "session.duration", K.HISTOGRAM, "s", "Session lifetime",
      "session", (SESSION_TYPE, MODEL), _SESSION_S),
    M("session_tokens_used", "session.tokens_used", K.COUNTER, "{token}", "API tokens consumed",
      "session", (MODEL, TOKEN_TYPE),
      note=_TOTAL_NOTE.format(prom="session_tokens_used_total")
      + " Label token_type added (input/output/cache_read/cache_write) so cost can be derived; "
      "sum without(token_type) gives the documented series."),
    M("session_tool_calls_total", "session.tool_calls", K.COUNTER, "{call}", "Tool invocations",
      "session", (TOOL_NAME, STATUS),
      note="Label status added so failing tools show without a second metric."),
    M("session_errors_total", "session.errors", K.COUNTER, "{error}", "Session errors", "session",
      (ERROR_TYPE,)),
    M("session_cost_usd_total", "session.cost_usd", K.COUNTER, "{USD}",
      "Model cost reported by the runtime, in US dollars", "session", (MODEL,), source="ours",
      note="Not in the design's tables; the Token Budget KPI needs it. Prometheus has no unit word "
      "for currency, so the name carries it and the unit is the annotation {USD}."),
    # --- task completion -------------------------------------------------------------------------
    M("task_completion_total", "task.completion", K.COUNTER, "{task}", "Tasks completed", "session",
      (STATUS, PHASE)),
    M("task_completion_rate", "task.completion_rate", K.GAUGE, "1",
      "Completion rate (24h rolling): successes over all completions", "session",
      note="A dimensionless gauge has UCUM unit 1, which the collector's translation turns into "
      "the Prometheus suffix _ratio: query task_completion_rate_ratio."),
    M("task_duration_seconds", "task.duration", K.HISTOGRAM, "s", "Time to complete task",
      "session", (PHASE,), _TASK_S),
    M("task_validation_passes", "task.validation.passes", K.COUNTER, "{validation}",
      "Validation successes", "session", (LAYER,),
      note=_TOTAL_NOTE.format(prom="task_validation_passes_total")),
    M("task_validation_failures", "task.validation.failures", K.COUNTER, "{validation}",
      "Validation failures", "session", (LAYER, REASON),
      note=_TOTAL_NOTE.format(prom="task_validation_failures_total")),
    M("task_latency_seconds", "task.latency", K.HISTOGRAM, "s",
      "Time from task creation to its completion (queueing included); the HighLatency alert's P95",
      "session", (PHASE,), _TASK_S, source="design: API reference and HighLatency alert"),
    # --- spawn queue -----------------------------------------------------------------------------
    M("spawn_queue_depth", "spawn.queue.depth", K.GAUGE, "{request}",
      "Pending spawn requests", "spawn_queue"),
    M("spawn_queue_latency_seconds", "spawn.queue.latency", K.HISTOGRAM, "s",
      "Request to spawn time", "spawn_queue", (), _SPAWN_S),
    M("spawn_requests_total", "spawn.requests", K.COUNTER, "{request}", "Total spawn requests",
      "spawn_queue", (STATUS,)),
    M("spawn_subagent_active", "spawn.subagent.active", K.UPDOWN_COUNTER, "{agent}",
      "Active sub-agents", "spawn_queue", (MODEL,)),
    M("spawn_subagent_total", "spawn.subagent", K.COUNTER, "{agent}", "Total sub-agents spawned",
      "spawn_queue", (MODEL,)),
    # --- inbox (the design names key metrics but has no table: ours, in the same style) ---------
    M("inbox_messages_total", "inbox.messages", K.COUNTER, "{message}",
      "Inbox messages by event (created, delivered, archived, failed) and agent pair", "inbox",
      (MESSAGE_EVENT, AGENT_FROM, AGENT_TO), source="ours (design: inbox key metrics)",
      note="Agent ids are capped per label (default 100 distinct, then other) and agent pairs per metric "
           "(default 1,000 distinct label sets, then both agents become other)."),
    M("inbox_delivery_latency_seconds", "inbox.delivery.latency", K.HISTOGRAM, "s",
      "Time from message creation to delivery", "inbox", (AGENT_TO,), _DELIVERY_S,
      source="ours (design: inbox key metrics)"),
    M("inbox_undelivered_messages", "inbox.undelivered_messages", K.GAUGE, "{message}",
      "Messages waiting in an inbox", "inbox", (AGENT_TO,), source="ours (design: inbox key metrics)"),
    # --- heartbeats (task liveness files, not OpenClaw's heartbeat turns) ------------------------
    M("heartbeat_active", "heartbeat.active", K.GAUGE, "{heartbeat}",
      "Active heartbeats", "heartbeat"),
    M("heartbeat_stale_total", "heartbeat.stale", K.COUNTER, "{heartbeat}",
      "Stale heartbeats detected (each heartbeat counted once when it turns stale)", "heartbeat"),
    M("heartbeat_stale_current", "heartbeat.stale.current", K.GAUGE, "{heartbeat}",
      "Heartbeats stale right now", "heartbeat", source="ours (the StaleHeartbeats alert)",
      note="The design's StaleHeartbeats alert divides a counter by a gauge, which grows without "
      "bound; the alert uses this gauge over heartbeat_active instead."),
    M("heartbeat_age_seconds", "heartbeat.age", K.HISTOGRAM, "s", "Heartbeat ages", "heartbeat",
      (), _HEARTBEAT_S,
      note="The design's task_id label is dropped: task ids are unbounded and each would be a "
      "histogram of its own. Per-task ages are in the heartbeat watcher's logs (metadata.task_id)."),
    # --- resources -------------------------------------------------------------------------------
    M("resource_memory_used_bytes", "resource.memory.used", K.GAUGE, "By",
      "Process memory usage", "resources", (PROCESS,)),
    M("resource_memory_total", "resource.memory.total", K.GAUGE, "By",
      "Total memory of the host", "resources", source="design: HighMemoryUsage alert",
      note="Prometheus naming puts the unit last and keeps _total for counters: the collector's "
      "translation gives resource_memory_total_bytes."),
    M("resource_cpu_percent", "resource.cpu", K.GAUGE, "%", "CPU utilization",
      "resources", (PROCESS,)),
    M("resource_disk_used_bytes", "resource.disk.used", K.GAUGE, "By", "Disk space used",
      "resources", (PATH,)),
    M("resource_disk_free_bytes", "resource.disk.free", K.GAUGE, "By", "Disk space free",
      "resources", (PATH,)),
)

SELF_REASON = LabelSpec("reason", description="Why a measurement or input was dropped or folded")
SELF_SOURCE = LabelSpec("source", description="Which component met the bad input")

#: The library's own health: what it dropped, folded or could not read, counted by reason.
SELF_METRICS: tuple[MetricSpec, ...] = (
    M("clawdbot_otel_dropped_total", "clawdbot_otel.dropped", K.COUNTER, "{measurement}",
      "Telemetry calls dropped or folded into other, by reason", "self",
      (SELF_REASON, LabelSpec("metric", description="The catalogue name, or unknown")),
      source="ours (self-telemetry)"),
    M("clawdbot_otel_source_errors_total", "clawdbot_otel.source_errors", K.COUNTER, "{error}",
      "Bad input met by a collection point (malformed file, unknown frame), by reason", "self",
      (SELF_SOURCE, SELF_REASON), source="ours (self-telemetry)"),
    M("clawdbot_otel_log_write_errors_total", "clawdbot_otel.log.write_errors", K.COUNTER,
      "{error}", "Log lines a sink could not write (sent to stderr instead)", "self",
      (LabelSpec("sink", description="The sink's name"), SELF_REASON),
      source="ours (self-telemetry)"),
)

RECORDING_RULES: tuple[RecordingRule, ...] = (
    RecordingRule(
        "spawn_queue_wait_p99",
        "histogram_quantile(0.99, sum by (le) (rate(spawn_queue_latency_seconds_bucket[5m])))",
        "P99 of request-to-spawn latency over 5 minutes (the design's 'Summary' example)",
        "spawn_queue_latency_seconds",
    ),
)

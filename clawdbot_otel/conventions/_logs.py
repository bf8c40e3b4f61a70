"""The design's log levels, categories and JSON record fields, defined once."""

from __future__ import annotations

from ._model import LogField, LogLevel

__all__ = ["AUDIT_CATEGORY", "LOG_CATEGORIES", "LOG_FIELDS", "LOG_LEVELS"]

#: Values as in the design; OTel severity numbers as in the OTel logs data model.
LOG_LEVELS: tuple[LogLevel, ...] = (
    LogLevel("DEBUG", 10, 5, "Detailed debugging information"),
    LogLevel("INFO", 20, 9, "General operational events"),
    LogLevel("WARN", 30, 13, "Warning conditions"),
    LogLevel("ERROR", 40, 17, "Error conditions"),
    LogLevel("FATAL", 50, 21, "System-critical failures"),
)

#: component -> what it covers (the design's Log Categories, plus the audit channel).
LOG_CATEGORIES: dict[str, str] = {
    "gateway": "Gateway Service: connection events, request/response",
    "scheduler": "Cron System: job execution, scheduling decisions",
    "session": "Agent Runtime: session lifecycle, tool calls",
    "spawn": "Spawn Queue: spawn requests, processing",
    "inbox": "Communication: message routing, delivery",
    "validation": "3-Layer System: validation results",
    "heartbeat": "Health Monitoring: heartbeat updates, stale detection",
    "resources": "Resource sampling",
    "telemetry": "This library: dropped values, exporter and sink failures",
    "audit": "Security-relevant events: authentication, configuration changes, stack start/stop",
}
AUDIT_CATEGORY = "audit"

LOG_FIELDS: tuple[LogField, ...] = (
    LogField("timestamp", "string", "ISO-8601 UTC with milliseconds and Z", True,
             "2026-02-24T23:30:00.000Z"),
    LogField("level", "string", "DEBUG, INFO, WARN, ERROR or FATAL", True, "INFO"),
    LogField("component", "string", "Log category (see categories)", True, "gateway"),
    LogField("message", "string", "Human-readable event", True, "Request completed"),
    LogField("correlation_id", "string", "User-facing request id (W3C baggage)", False, "req-abc123"),
    LogField("trace_id", "string", "32 lowercase hex of the current span's trace", False,
             "4bf92f3577b34da6a3ce929d0e0e4736"),
    LogField("span_id", "string", "16 lowercase hex of the current span", False, "00f067aa0ba902b7"),
    LogField("request_id", "string", "Gateway request frame id", False, "req-001"),
    LogField("session_id", "string", "Agent session key", False, "agent:main:cron:uuid"),
    LogField("duration_ms", "number", "Duration of the logged operation", False, "150"),
    LogField("metadata", "object", "Everything else, redacted and size-capped", False,
             '{"method": "agentTurn", "status": "success"}'),
)

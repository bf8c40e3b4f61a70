"""clawdbot-otel: the design's metrics, spans and logs for the OpenClaw gateway, over OpenTelemetry.

    import clawdbot_otel as telemetry

    telemetry.setup()                      # providers from OTEL_* variables
    telemetry.increment("gateway_requests_total", {"method": "agent", "status": "success"})
    with telemetry.start_span("session", attributes={"gen_ai.agent.name": "main"}):
        telemetry.log("INFO", "session", "Session started")

The module-level functions are bound to a default `Telemetry`; tests build their own over explicit
providers (see `clawdbot_otel.testing`).
"""

from __future__ import annotations

from ._audit import audit
from ._context import correlation, current_correlation_id
from ._default import DEFAULT_TELEMETRY as _DEFAULT
from ._facade import Telemetry, TelemetryError
from ._logging import LogSink, StreamSink
from ._redact import Redactor
from ._setup import Settings, setup, shutdown
from ._spans import SpanHandle, SpanScope, model_family, session_type

__all__ = [
    "LogSink",
    "Redactor",
    "Settings",
    "SpanHandle",
    "SpanScope",
    "StreamSink",
    "Telemetry",
    "TelemetryError",
    "audit",
    "correlation",
    "current_correlation_id",
    "gauge",
    "get_telemetry",
    "histogram",
    "increment",
    "job_span",
    "log",
    "message_span",
    "model_call_span",
    "model_family",
    "observe",
    "request_span",
    "session_span",
    "session_type",
    "setup",
    "shutdown",
    "spawn_span",
    "start_span",
    "tool_call_span",
    "validation_span",
]

__version__ = "0.1.0"


def get_telemetry() -> Telemetry:
    """The default instance behind the module-level functions."""
    return _DEFAULT


increment = _DEFAULT.increment
gauge = _DEFAULT.gauge
histogram = _DEFAULT.histogram
observe = _DEFAULT.observe
log = _DEFAULT.log
start_span = _DEFAULT.start_span
request_span = _DEFAULT.request_span
session_span = _DEFAULT.session_span
model_call_span = _DEFAULT.model_call_span
tool_call_span = _DEFAULT.tool_call_span
spawn_span = _DEFAULT.spawn_span
message_span = _DEFAULT.message_span
validation_span = _DEFAULT.validation_span
job_span = _DEFAULT.job_span

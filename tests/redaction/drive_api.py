"""Pushes every corpus sample through every surface of the public API (run as a process by the corpus test:
`setup()` reads the environment once, as it does for a user).

Surfaces: log message and metadata, a tool span's captured params and result, its status description and
exception event (type, message, stack trace), an event of its own, a span name, a metric label value, an
audit record, and standard-library logging with a traceback.
"""

from __future__ import annotations

import contextlib
import logging

import clawdbot_otel as telemetry
from clawdbot_otel import Telemetry, audit

from .corpus import CORPUS


class ProviderError(Exception):
    """What a provider SDK raises: its message echoes the request's credentials."""


def push(t: Telemetry, text: str) -> None:
    """`text` through every surface of one `Telemetry` (strict or not: nothing here is outside the catalogue)."""
    t.log("WARN", "gateway", text, metadata={"detail": text, "nested": [{"x": text}]})
    with contextlib.suppress(ProviderError), t.tool_call_span("exec", params={"cmd": text}) as span:
        span.set("gen_ai.tool.call.result", text)
        span.span.add_event("tool.stderr", {"line": text})
        raise ProviderError(text)
    with t.job_span(text):
        pass
    t.increment("session_tool_calls_total", {"tool_name": text, "status": "failure"})
    audit("config.set", outcome="failure", actor=text, reason=text, telemetry=t)
    try:
        raise ProviderError(text)
    except ProviderError:
        logging.getLogger("provider.sdk").exception("call failed: %s", text)


def main() -> None:
    telemetry.setup(service_name="redaction-corpus")
    for sample in CORPUS:
        push(telemetry.get_telemetry(), sample.text)
    telemetry.shutdown()


if __name__ == "__main__":
    main()

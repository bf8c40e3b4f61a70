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
from clawdbot_otel.logfiles import audit

from .corpus import CORPUS


class ProviderError(Exception):
    """What a provider SDK raises: its message echoes the request's credentials."""


def main() -> None:
    telemetry.setup(service_name="redaction-corpus")
    for sample in CORPUS:
        telemetry.log("WARN", "gateway", sample.text, metadata={"detail": sample.text, "nested": [{"x": sample.text}]})
        with contextlib.suppress(ProviderError), telemetry.tool_call_span("exec", params={"cmd": sample.text}) as span:
            span.set("gen_ai.tool.call.result", sample.text)
            span.span.add_event("tool.stderr", {"line": sample.text})
            raise ProviderError(sample.text)
        with telemetry.job_span(sample.text):
            pass
        telemetry.increment("session_tool_calls_total", {"tool_name": sample.text, "status": "failure"})
        audit("config.set", outcome="failure", actor=sample.text, reason=sample.text)
        try:
            raise ProviderError(sample.text)
        except ProviderError:
            logging.getLogger("provider.sdk").exception("call failed: %s", sample.text)
    telemetry.shutdown()


if __name__ == "__main__":
    main()

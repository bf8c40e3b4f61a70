"""What the fuzz tests found, kept as regular tests (each failed before its fix)."""

from __future__ import annotations

import math

import pytest

from clawdbot_otel import TelemetryError
from clawdbot_otel._span_export import encode_spans_fast
from clawdbot_otel.testing import capture_telemetry


@pytest.mark.parametrize("value", [b"\x00raw", 2**64, -(2**63) - 1, ["a", 1], [{"x": 1}], {"k": "v"}])
def test_a_span_attribute_that_is_not_an_otel_value_is_refused_and_counted(value: object) -> None:
    # Found: bytes and ints beyond 64 bits were kept; the console exporter (json) and the OTLP encoding of the
    # whole batch then failed, losing every other span with it.
    with capture_telemetry(strict=False) as cap:
        with cap.telemetry.tool_call_span("exec") as span:
            span.set("clawdbot.tool.params_bytes", value)
        with cap.telemetry.start_span("tool_call", attributes={"gen_ai.tool.name": "x", "gen_ai.tool.call.id": value}):
            pass
        spans = cap.finished_spans()
        assert cap.telemetry.dropped[("invalid_attribute_value", "span:tool_call")] == 2
        encode_spans_fast(spans)
        assert all(span.to_json() for span in spans)
    with capture_telemetry(strict=True) as cap, pytest.raises(TelemetryError, match="use a str, bool, int, float"), \
            cap.telemetry.tool_call_span("exec") as span:
        span.set("clawdbot.tool.params_bytes", value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_counter_increment_that_is_not_finite_is_counted(value: float) -> None:
    # Found: the SDK dropped NaN and infinities without a word; nothing said a measurement was lost.
    with capture_telemetry(strict=False) as cap:
        cap.telemetry.increment("gateway_requests_total", {"method": "agent", "status": "success"}, value)
        assert cap.telemetry.dropped == {("invalid_value", "gateway_requests_total"): 1}

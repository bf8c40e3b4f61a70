"""What the fuzz tests found, kept as regular tests (each failed before its fix)."""

from __future__ import annotations

import json
import math

import pytest

from clawdbot_otel import TelemetryError
from clawdbot_otel._span_export import encode_spans_fast
from clawdbot_otel.frames import RequestFrame, parse_frame
from clawdbot_otel.gateway import inject_traceparent
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


def test_a_nested_traceparent_is_never_rewritten_for_the_top_level_one() -> None:
    # Found: with the top-level value written with \u escapes and the same value plain in `params`, the
    # proxy replaced the nested one: the upstream got altered params and the client's trace instead of ours.
    old = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    new = "00-11111111111111111111111111111111-2222222222222222-01"
    message = json.dumps({"type": "req", "id": "1", "method": "m", "traceparent": "X", "params": {"traceparent": old}})
    message = message.replace('"X"', json.dumps(old).replace("0", "\\u0030"))
    frame = parse_frame(message)
    assert isinstance(frame, RequestFrame) and frame.traceparent == old
    out = json.loads(inject_traceparent(message, frame, new))
    assert out == {"type": "req", "id": "1", "method": "m", "traceparent": new, "params": {"traceparent": old}}

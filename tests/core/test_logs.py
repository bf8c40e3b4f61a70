"""The design's JSON log record, trace context in JSON lines and OTLP records, stdlib bridge."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import orjson
from opentelemetry.baggage import set_baggage
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from clawdbot_otel import StreamSink, Telemetry
from clawdbot_otel._context import CORRELATION_BAGGAGE_KEY
from clawdbot_otel._logging import StdlibBridgeHandler, level_value
from clawdbot_otel.testing import capture_telemetry

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_record_has_the_designs_fields_in_order_and_level_names() -> None:
    clock = iter([1_795_000_000_123_456_789, 1_795_000_000_999_000_000] * 5).__next__
    with capture_telemetry(clock=clock) as cap:
        t = cap.telemetry
        t.log("INFO", "gateway", "Request completed", correlation_id="req-abc123", request_id="req-001",
              session_id="agent:main:main", duration_ms=150, metadata={"method": "agent", "status": "success"})
        t.log("WARN", "scheduler", "slow")
        t.log(50, "gateway", "down")
        t.logger.warning("via structlog", component="spawn")
        t.logger.critical("fatal via structlog", component="spawn")
        first, warn, fatal, sl_warn, sl_fatal = cap.log_lines()
        assert first == {
            "timestamp": "2026-11-18T11:06:40.123Z",
            "level": "INFO",
            "component": "gateway",
            "message": "Request completed",
            "correlation_id": "req-abc123",
            "request_id": "req-001",
            "session_id": "agent:main:main",
            "duration_ms": 150,
            "metadata": {"method": "agent", "status": "success"},
        }
        assert list(first) == ["timestamp", "level", "component", "message", "correlation_id", "request_id",
                               "session_id", "duration_ms", "metadata"]
        assert [warn["level"], fatal["level"], sl_warn["level"], sl_fatal["level"]] == ["WARN", "FATAL", "WARN",
                                                                                        "FATAL"]
        assert warn["timestamp"] == "2026-11-18T11:06:40.999Z"
        severities = [r.log_record.severity_number.value for r in cap.otlp_logs()]
        assert severities == [9, 13, 21, 13, 21]


def test_a_log_inside_a_span_carries_its_ids_in_json_and_otlp_exactly_once() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry
        with t.session_span("main") as span:
            t.log("INFO", "session", "inside")
        (line,) = cap.log_lines()
        assert line["trace_id"] == span.trace_id and re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert line["span_id"] == span.span_id and re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert TIMESTAMP.match(line["timestamp"])
        (record,) = cap.otlp_logs()
        ctx = span.span.get_span_context()
        assert (record.log_record.trace_id, record.log_record.span_id) == (ctx.trace_id, ctx.span_id)
        assert record.log_record.body == "inside"


def test_trace_ids_are_injected_when_the_span_is_not_sampled() -> None:
    stream = io.BytesIO()
    t = Telemetry(tracer_provider=TracerProvider(sampler=ALWAYS_OFF), log_sinks=[StreamSink(stream)])
    with t.session_span("main") as span:
        t.log("INFO", "session", "not sampled")
    assert not span.span.get_span_context().trace_flags.sampled
    assert f'"trace_id":"{span.trace_id}"' in stream.getvalue().decode()


def test_metadata_secrets_are_redacted_and_sizes_capped() -> None:
    with capture_telemetry() as cap:
        metadata = {"token": "abc", "url": "wss://u:pw@h/", "blob": "z" * 4000}
        cap.telemetry.log("INFO", "gateway", "auth", metadata=metadata)
        (line,) = cap.log_lines()
        assert line["metadata"]["token"] == "[REDACTED:token]"
        assert "pw@" not in line["metadata"]["url"]
        assert len(line["metadata"]["blob"]) < 1100


def test_stdlib_logging_of_other_libraries_goes_through_the_same_pipeline_once() -> None:
    with capture_telemetry() as cap:
        lib = logging.getLogger("websockets.server")
        handler = StdlibBridgeHandler(cap.telemetry.logger)
        lib.addHandler(handler)
        lib.propagate = False
        try:
            with cap.telemetry.request_span("agent") as span:
                lib.warning("connection %s closed", "c1")
        finally:
            lib.removeHandler(handler)
            lib.propagate = True
        (line,) = cap.log_lines()
        assert line["component"] == "websockets" and line["level"] == "WARN"
        assert line["message"] == "connection c1 closed"
        assert line["metadata"]["logger"] == "websockets.server"
        assert line["trace_id"] == span.trace_id
        assert len(cap.otlp_logs()) == 1


def _bridged(cap: Any, name: str) -> tuple[logging.Logger, StdlibBridgeHandler]:
    lib = logging.getLogger(name)
    handler = StdlibBridgeHandler(cap.telemetry.logger)
    lib.addHandler(handler)
    lib.propagate = False
    lib.setLevel(logging.DEBUG)
    return lib, handler


def _unbridge(lib: logging.Logger, handler: StdlibBridgeHandler) -> None:
    lib.removeHandler(handler)
    lib.propagate = True
    lib.setLevel(logging.NOTSET)


def test_non_standard_level_numbers_round_down_to_the_designs_levels() -> None:
    with capture_telemetry() as cap:
        lib, handler = _bridged(cap, "plugin")
        try:
            lib.log(25, "between info and warn")
            lib.log(15, "between debug and info")
        finally:
            _unbridge(lib, handler)
        cap.telemetry.log(45, "gateway", "between error and fatal")
        assert [(r["level"], r["message"]) for r in cap.log_lines()] == [
            ("INFO", "between info and warn"), ("DEBUG", "between debug and info"), ("ERROR", "between error and fatal")]
        assert [r.log_record.severity_text for r in cap.otlp_logs()] == ["INFO", "DEBUG", "ERROR"]


def test_the_sdks_own_records_reach_the_sinks_but_not_otlp() -> None:
    # "Failed to export" while the collector is down must not be exported again (a loop).
    with capture_telemetry() as cap:
        lib, handler = _bridged(cap, "opentelemetry.exporter.otlp.proto.http.trace_exporter")
        try:
            lib.warning("Failed to export span batch, retrying")
        finally:
            _unbridge(lib, handler)
        cap.telemetry.log("INFO", "gateway", "after")
        assert [r["message"] for r in cap.log_lines()] == ["Failed to export span batch, retrying", "after"]
        assert [r.log_record.body for r in cap.otlp_logs()] == ["after"]


def test_level_filtering_drops_below_the_minimum() -> None:
    with capture_telemetry(log_level="WARN") as cap:
        cap.telemetry.log("DEBUG", "gateway", "noise")
        cap.telemetry.log("INFO", "gateway", "noise")
        cap.telemetry.log("ERROR", "gateway", "kept")
        assert [r["message"] for r in cap.log_lines()] == ["kept"]


def test_the_fast_log_path_writes_exactly_what_the_structlog_chain_writes() -> None:
    """`Telemetry.log` runs the chain's steps fused; `t.logger.log` runs the chain itself."""
    calls: list[tuple[str | int, str, str, dict[str, Any]]] = [
        ("INFO", "gateway", "plain", {}),
        ("DEBUG", "gateway", "all fields", {"correlation_id": "c-1", "request_id": "r", "session_id": "s",
                                            "duration_ms": 0, "metadata": {"method": "agent"}}),
        ("WARN", "", "default component and extras", {"custom": 1, "api_key": "sk-secret", "url": "wss://u:pw@h/",
                                                      "metadata": {"a": None, "b": [1, {"c": 2}]}}),
        ("ERROR", "session", "ignored fields", {"timestamp": "x", "_private": 1, "request_id": None}),
        (50, "spawn", "chain-only fields", {"trace_id": "mine", "span_id": "also mine", "x": object()}),
        ("INFO", "gateway", "metadata only from extras", {"metadata": {}, "k": "v"}),
    ]
    clock = iter([1_795_000_000_123_456_789] * 100).__next__
    with capture_telemetry(clock=clock) as cap:
        t = cap.telemetry
        assert t._log_pipeline._fused
        token = attach(set_baggage(CORRELATION_BAGGAGE_KEY, "from-baggage"))
        try:
            with t.session_span("main"):
                for level, component, message, fields in calls:
                    t.log(level, component, message, **fields)
                for level, component, message, fields in calls:
                    levelno = level if isinstance(level, int) else level_value(level)
                    t.logger.log(levelno, message, component=component,
                                 **{"correlation_id": None, "metadata": None, **fields})
        finally:
            detach(token)
        lines = cap.log_stream.getvalue().splitlines()
        assert lines[: len(calls)] == lines[len(calls):]
        assert len(lines) == 2 * len(calls)
        first, _, third, *_ = cap.log_lines()
        assert first["correlation_id"] == "from-baggage" and len(first["trace_id"]) == 32
        assert third["component"] == "app" and third["metadata"]["api_key"] == "[REDACTED:api-key]"
        records = cap.otlp_logs()
        fused, chain = records[: len(calls)], records[len(calls):]
        for a, b in zip(fused, chain, strict=True):
            assert (a.log_record.timestamp, a.log_record.body, a.log_record.severity_number,
                    a.log_record.severity_text, dict(a.log_record.attributes or {}), a.log_record.trace_id,
                    a.log_record.span_id, a.log_record.trace_flags) == (
                b.log_record.timestamp, b.log_record.body, b.log_record.severity_number,
                b.log_record.severity_text, dict(b.log_record.attributes or {}), b.log_record.trace_id,
                b.log_record.span_id, b.log_record.trace_flags)


def test_log_writes_to_the_sinks_of_the_latest_bind() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry
        out = io.BytesIO()
        t.bind(t.meter_provider, t.tracer_provider, t.logger_provider, log_sinks=[StreamSink(out)])
        t.log("INFO", "gateway", "to the new sink")
        assert [orjson.loads(line)["message"] for line in out.getvalue().splitlines()] == ["to the new sink"]
        assert cap.log_lines() == []  # the capture's own stream is no longer a sink

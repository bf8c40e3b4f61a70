"""CLAWDBOT_OTEL_FAST_EXPORT: the fast export path and the SDK's own exporters send the same records.

The same workload runs through `setup()` in two fresh interpreters, one with the switch on and one
with it off, against a local OTLP receiver (HTTP or gRPC, in this process) or the local files; the
requests are decoded with the OTLP protobuf classes and compared after the only differences that
two runs must have (ids, timestamps) are numbered away.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from clawdbot_otel import Settings
from clawdbot_otel._sdk_internals import FAST_EXPORT_ENV, fast_export_enabled

WORKLOAD = """
import logging
import clawdbot_otel as telemetry
from opentelemetry._logs import SeverityNumber, get_logger_provider

settings = telemetry.setup(announce=None)
print("fast_export", settings.fast_export)
with telemetry.request_span("agent", request_id="r-1", body={"message": "hi"}, body_bytes=17):
    with telemetry.session_span("main", model="claude-opus-4-5", session_key="agent:main:main") as session:
        session.update({"gen_ai.usage.input_tokens": 10, "gen_ai.response.finish_reasons": ["stop"]})
        telemetry.log("INFO", "session", "Session started", session_id="s-1",
                      metadata={"n": 3, "nested": {"a": [1, 2]}, "ok": True, "ratio": 0.5})
        with telemetry.model_call_span("claude-opus-4-5", provider="anthropic"):
            pass
        with telemetry.tool_call_span("exec", call_id="c-1", params={"cmd": "ls"}) as tool:
            tool.record_error(RuntimeError("exit 1"), "tool_error")
            telemetry.log("ERROR", "tool", "Tool failed", duration_ms=12.5, metadata={"token": "sk-abc"})
        logging.getLogger("somelib").warning("library says %s", "hi")
        telemetry.get_telemetry().logger.info("through structlog", component="gateway", request_id="r-1")
telemetry.log("DEBUG", "gateway", "below the level: not exported")
telemetry.log(25, "gateway", "a non-standard level number")
get_logger_provider().get_logger("other.scope", "1.0").emit(
    body={"structured": ["body", 1]}, severity_number=SeverityNumber.WARN, severity_text="WARN",
    attributes={"x": 1, "big": 2**70})
telemetry.shutdown()
"""


def _run(tmp_path: Path, fast: bool, env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    base.update({
        FAST_EXPORT_ENV: "1" if fast else "0",
        "CLAWDBOT_OTEL_OUTPUT_DIR": str(tmp_path / ("fast" if fast else "sdk")),
        "OTEL_SERVICE_NAME": "differential",
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=i-1,deployment.environment.name=production",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "OTEL_BLRP_SCHEDULE_DELAY": "60000",
        **env,
    })
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(WORKLOAD)], env=base, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"fast_export {fast}" in proc.stdout
    return proc.stderr


class _Ids:
    """Numbers trace and span ids by first appearance: two runs draw different random ids."""

    def __init__(self) -> None:
        self.seen: dict[bytes, bytes] = {}

    def __call__(self, value: bytes) -> bytes:
        if not value:
            return value
        return self.seen.setdefault(value, len(self.seen).to_bytes(len(value), "big"))


def _spans(requests: list[ExportTraceServiceRequest]) -> list[tuple[bytes, bytes, bytes]]:
    ids = _Ids()
    out = []
    for request in requests:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.trace_id, span.span_id = ids(span.trace_id), ids(span.span_id)
                    span.parent_span_id = ids(span.parent_span_id)
                    span.start_time_unix_nano = span.end_time_unix_nano = 0
                    for event in span.events:
                        event.time_unix_nano = 0
                    out.append((rs.resource.SerializeToString(), ss.scope.SerializeToString(),
                                span.SerializeToString()))
    return out


def _logs(requests: list[ExportLogsServiceRequest]) -> list[tuple[bytes, bytes, bytes]]:
    ids = _Ids()
    out = []
    for request in requests:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    record.trace_id, record.span_id = ids(record.trace_id), ids(record.span_id)
                    record.time_unix_nano = record.observed_time_unix_nano = 0
                    out.append((rl.resource.SerializeToString(), sl.scope.SerializeToString(),
                                record.SerializeToString()))
    return out


class _Received:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.content_types: set[str] = set()

    def take(self) -> tuple[list[tuple[bytes, bytes, bytes]], list[tuple[bytes, bytes, bytes]]]:
        traces, logs = _spans(self.traces), _logs(self.logs)
        self.traces, self.logs = [], []
        return traces, logs


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, _Received]]:
    received = _Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.content_types.add(self.headers["Content-Type"])
            if self.path == "/v1/traces":
                received.traces.append(ExportTraceServiceRequest.FromString(body))
            elif self.path == "/v1/logs":
                received.logs.append(ExportLogsServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, _Received]]:
    import grpc

    received = _Received()

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
            received.traces.append(request)
            return ExportTraceServiceResponse()

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request: ExportLogsServiceRequest, context: Any) -> ExportLogsServiceResponse:
            received.logs.append(request)
            return ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(None)


def _assert_same(fast: tuple[list[Any], list[Any]], sdk: tuple[list[Any], list[Any]]) -> None:
    fast_spans, fast_logs = fast
    sdk_spans, sdk_logs = sdk
    assert len(fast_spans) == 4 and len(fast_logs) == 6  # the workload's spans; its records at INFO and above
    assert fast_spans == sdk_spans
    assert fast_logs == sdk_logs


def test_over_otlp_http_both_paths_send_the_same_spans_and_log_records(
        tmp_path: Path, http_receiver: tuple[str, _Received]) -> None:
    endpoint, received = http_receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    _run(tmp_path, True, env)
    fast = received.take()
    _run(tmp_path, False, env)
    _assert_same(fast, received.take())
    assert received.content_types == {"application/x-protobuf"}


def test_over_otlp_grpc_both_paths_send_the_same_spans_and_log_records(
        tmp_path: Path, grpc_receiver: tuple[str, _Received]) -> None:
    endpoint, received = grpc_receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    _run(tmp_path, True, env)
    fast = received.take()
    _run(tmp_path, False, env)
    _assert_same(fast, received.take())


def test_to_local_files_both_paths_write_the_same_records(tmp_path: Path) -> None:
    def read(side: str) -> tuple[list[Any], list[Any]]:
        folder = tmp_path / side
        traces = [json_format.Parse(line, ExportTraceServiceRequest())
                  for line in (folder / "traces.jsonl").read_text().splitlines()]
        logs = [json_format.Parse(line, ExportLogsServiceRequest())
                for line in (folder / "logs.jsonl").read_text().splitlines()]
        return _spans(traces), _logs(logs)

    _run(tmp_path, True, {})
    _run(tmp_path, False, {})
    _assert_same(read("fast"), read("sdk"))


def test_the_switch_reads_zero_as_off_and_says_so_in_the_settings() -> None:
    assert fast_export_enabled({}) and fast_export_enabled({FAST_EXPORT_ENV: "1"})
    assert not fast_export_enabled({FAST_EXPORT_ENV: "0"}) and not fast_export_enabled({FAST_EXPORT_ENV: "off"})
    assert Settings.from_env({FAST_EXPORT_ENV: "0"}).fast_export is False
    assert Settings.from_env({}).fast_export is True

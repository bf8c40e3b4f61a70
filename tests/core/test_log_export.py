"""The queued OTLP log path: protobuf equal to the SDK's, batching, flush, drops, fork, exactly once."""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.baggage import set_baggage
from opentelemetry.context import attach, detach
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordDroppedAttributesWarning,
    LogRecordLimits,
    ReadableLogRecord,
)
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from clawdbot_otel import StreamSink, Telemetry
from clawdbot_otel._context import CORRELATION_BAGGAGE_KEY
from clawdbot_otel._file_export import FileLogExporter
from clawdbot_otel._log_export import LogItem, encode_items, item_to_sdk_record
from clawdbot_otel._log_queue import QueuedLogRecordProcessor
from clawdbot_otel._sdk_internals import otlp_log_exporter
from clawdbot_otel.testing import IncrementalIdGenerator

NS = 1_795_000_000_123_456_789


class Recorder(LogRecordExporter):
    """Keeps every batch: decoded requests from `export_encoded`, SDK records from `export`."""

    def __init__(self, encoded: bool = True) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        self.batches: list[list[ReadableLogRecord]] = []
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.shut = False
        if not encoded:
            self.export_encoded = None  # type: ignore[assignment]

    def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
        self.entered.set()
        self.release.wait(30)
        self.requests.append(ExportLogsServiceRequest.FromString(payload))
        self.sizes.append(count)
        return LogRecordExportResult.SUCCESS

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.entered.set()
        self.release.wait(30)
        self.batches.append(list(batch))
        self.sizes.append(len(batch))
        return LogRecordExportResult.SUCCESS

    def records(self) -> list[Any]:
        return [r for req in self.requests for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]

    def bodies(self) -> list[str]:
        return [r.body.string_value for r in self.records()] + [str(r.log_record.body) for b in self.batches for r in b]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.shut = True


def _telemetry(processor: QueuedLogRecordProcessor, **kwargs: Any) -> tuple[Telemetry, LoggerProvider, io.BytesIO]:
    provider = LoggerProvider(resource=Resource.create({"service.name": "t"}), shutdown_on_exit=False)
    provider.add_log_record_processor(processor)
    stream = io.BytesIO()
    tracer_provider = TracerProvider(id_generator=IncrementalIdGenerator(), shutdown_on_exit=False)
    t = Telemetry(logger_provider=provider, tracer_provider=tracer_provider, log_sinks=[StreamSink(stream)],
                  log_level="DEBUG", **kwargs)
    return t, provider, stream


def _item(logger: Any, **over: Any) -> LogItem:
    values: dict[str, Any] = {
        "ts": NS, "observed": NS, "sev": 9, "text": "INFO", "body": "Request completed",
        "attributes": {"component": "gateway", "request_id": "r-1"}, "trace_id": 0x4BF92F3577B34DA6A3CE929D0E0E4736,
        "span_id": 0x00F067AA0BA902B7, "flags": 1,
    }
    values.update(over)
    return (values["ts"], values["observed"], values["sev"], values["text"], values["body"], values["attributes"],
            values["trace_id"], values["span_id"], values["flags"], logger)


def _sdk_bytes(items: list[LogItem]) -> bytes:
    return bytes(encode_logs([item_to_sdk_record(i) for i in items]).SerializeToString())


# --- the encoding ---------------------------------------------------------------------------------

def test_encoded_request_is_byte_for_byte_what_the_sdk_encoder_produces() -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "svc", "k": 1}), shutdown_on_exit=False)
    logger = provider.get_logger("clawdbot_otel")
    other_scope = provider.get_logger("other", "1.2", "https://schema")
    other_resource = LoggerProvider(resource=Resource({"service.name": "x"}, "https://res"),
                                    shutdown_on_exit=False).get_logger("clawdbot_otel")
    items = [
        _item(logger),
        _item(logger, trace_id=0, span_id=0, flags=0),  # outside any span
        _item(logger, sev=0, text="", body=""),  # unspecified severity, empty body
        _item(logger, body="ünïcødé ✓ " * 40, attributes={
            "component": "g", "duration_ms": 150, "neg": -5, "float": 1.5, "yes": True, "no": False, "zero": 0,
            "metadata.s": "x" * 300, "big": 2**63 - 1, "min": -(2**63)}),
        _item(logger, attributes={"component": "g", "huge": 2**70}),  # not an int64: the SDK's path
        _item(logger, body={"a": [1, "b", None]}, attributes={"component": "g", "list": [1, 2]}),  # AnyValue kinds
        _item(logger, body=None, attributes={}),
        _item(other_scope),
        _item(other_resource),
        _item(logger, ts=0, observed=NS),
        _item(logger, sev=21, text="FATAL", attributes={f"a{i}": i for i in range(200)}),  # over the count limit
    ]
    with pytest.warns(LogRecordDroppedAttributesWarning):  # the last one, in both encoders
        payload, count = encode_items(items)
        expected = _sdk_bytes(items)
    assert count == len(items)
    assert payload == expected
    request = ExportLogsServiceRequest.FromString(payload)
    assert [len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs] == [9, 1, 1]


def test_attribute_limits_from_the_provider_apply_as_in_the_sdk() -> None:
    provider = LoggerProvider(log_record_limits=LogRecordLimits(max_attribute_length=4), shutdown_on_exit=False)
    items = [_item(provider.get_logger("clawdbot_otel"), attributes={"component": "gateway"})]
    payload, _ = encode_items(items)
    assert payload == _sdk_bytes(items)
    (record,) = ExportLogsServiceRequest.FromString(payload).resource_logs[0].scope_logs[0].log_records
    assert record.attributes[0].value.string_value == "gate"
    provider = LoggerProvider(log_record_limits=LogRecordLimits(max_attributes=2), shutdown_on_exit=False)
    items = [_item(provider.get_logger("clawdbot_otel"), attributes={"a": 1, "b": 2, "c": 3})]
    with pytest.warns(LogRecordDroppedAttributesWarning):
        payload, _ = encode_items(items)
        expected = _sdk_bytes(items)
    assert payload == expected
    (record,) = ExportLogsServiceRequest.FromString(payload).resource_logs[0].scope_logs[0].log_records
    assert (len(record.attributes), record.dropped_attributes_count) == (2, 1)


def test_queued_otlp_records_equal_what_logger_emit_would_have_exported() -> None:
    """The same calls through the SDK's Logger.emit (another processor present) and through the queue."""
    resource = Resource.create({"service.name": "t"})

    def run(queued: bool) -> list[Any]:
        clock = iter(range(NS, NS + 10**9, 10**6)).__next__
        recorder = Recorder()
        provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_log_record_processor(QueuedLogRecordProcessor(recorder, synchronous=True))
        if not queued:  # a second processor: EmitOTLP must use Logger.emit so both see every record
            provider.add_log_record_processor(SimpleLogRecordProcessor(InMemoryLogRecordExporter()))  # type: ignore[no-untyped-call]
        tracer_provider = TracerProvider(id_generator=IncrementalIdGenerator(), shutdown_on_exit=False)
        t = Telemetry(logger_provider=provider, tracer_provider=tracer_provider, log_sinks=[], log_level="DEBUG")
        from clawdbot_otel._logging import LogPipeline, build_processors

        t.log_processors = build_processors(provider, t.redactor, clock)
        t._log_pipeline = LogPipeline(t.log_processors, [], t._log_level, t._sink_error)
        t._logger = t._log_pipeline.logger
        t.log("INFO", "gateway", "done", correlation_id="c-1", request_id="r", session_id="s", duration_ms=1.5,
              metadata={"token": "x", "n": 3, "nested": {"a": [1]}}, extra_field=None)
        with t.session_span("main"):
            t.log("ERROR", "session", "in span")
            t.logger.warning("structlog", component="spawn")
        t.log("DEBUG", "", "default component", trace_id="mine")
        records = recorder.records()
        for r in records:
            r.observed_time_unix_nano = 0  # Logger.emit stamps its own observed time
        return records

    queued, emitted = run(True), run(False)
    assert len(queued) == 4
    assert queued == emitted


# --- the processor ---------------------------------------------------------------------------------

def test_batches_respect_the_batch_size_and_a_flush_exports_the_rest_in_order() -> None:
    recorder = Recorder()
    processor = QueuedLogRecordProcessor(recorder, max_export_batch_size=3, schedule_delay_millis=60_000)
    t, provider, _ = _telemetry(processor)
    for i in range(7):
        t.log("INFO", "gateway", f"m{i}")
    assert provider.force_flush()
    assert recorder.bodies() == [f"m{i}" for i in range(7)]
    assert max(recorder.sizes) <= 3 and sum(recorder.sizes) == 7
    processor.shutdown()


def test_the_schedule_delay_exports_without_a_flush() -> None:
    recorder = Recorder()
    processor = QueuedLogRecordProcessor(recorder, schedule_delay_millis=20)
    t, _, _ = _telemetry(processor)
    t.log("INFO", "gateway", "soon")
    for _ in range(500):
        if recorder.sizes:
            break
        threading.Event().wait(0.01)
    assert recorder.bodies() == ["soon"]
    processor.shutdown()


def test_otel_blrp_variables_configure_the_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BLRP_EXPORT_TIMEOUT", "2000")
    processor = QueuedLogRecordProcessor(Recorder())
    assert (processor.max_queue_size, processor.max_export_batch_size) == (100, 10)
    assert (processor.schedule_delay, processor.export_timeout) == (0.25, 2.0)
    processor.shutdown()
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "1000")  # more than the queue: capped
    processor = QueuedLogRecordProcessor(Recorder(), max_queue_size=50)
    assert processor.max_export_batch_size == 50
    processor.shutdown()


def test_shutdown_delivers_everything_queued_then_ignores_later_records() -> None:
    recorder = Recorder()
    processor = QueuedLogRecordProcessor(recorder, schedule_delay_millis=60_000)
    t, provider, stream = _telemetry(processor)
    for i in range(1000):
        t.log("INFO", "gateway", f"m{i}")
    provider.shutdown()
    assert recorder.bodies() == [f"m{i}" for i in range(1000)] and recorder.shut
    t.log("INFO", "gateway", "after shutdown")
    assert len(recorder.bodies()) == 1000 and not t.dropped
    assert stream.getvalue().count(b"\n") == 1001  # the JSON line is still written


def test_a_full_queue_drops_counts_and_never_blocks_the_caller() -> None:
    recorder = Recorder()
    recorder.release.clear()  # the exporter hangs, like a dead collector
    processor = QueuedLogRecordProcessor(recorder, max_queue_size=4, max_export_batch_size=4,
                                         schedule_delay_millis=60_000)
    t, provider, stream = _telemetry(processor)
    for i in range(4):
        t.log("INFO", "gateway", f"m{i}")
    assert recorder.entered.wait(10)  # the worker took the first four and is stuck in export
    for i in range(4, 10):
        t.log("INFO", "gateway", f"m{i}")
    assert t.dropped[("log_queue_full", "gateway")] == 2
    assert processor.dropped == 2
    assert stream.getvalue().count(b"\n") == 10  # every JSON line was written
    recorder.release.set()
    provider.force_flush()
    assert recorder.bodies() == [f"m{i}" for i in range(8)]
    processor.shutdown()


def test_exporters_without_encoded_support_get_sdk_records() -> None:
    recorder = Recorder(encoded=False)
    processor = QueuedLogRecordProcessor(recorder)
    t, provider, _ = _telemetry(processor)
    with t.session_span("main") as span:
        t.log("WARN", "session", "hello", request_id="r-1", metadata={"k": [1, 2]})
    provider.force_flush()
    ((record,),) = recorder.batches
    assert isinstance(record, ReadableLogRecord)
    lr = record.log_record
    ctx = span.span.get_span_context()
    assert (lr.trace_id, lr.span_id, int(lr.trace_flags)) == (ctx.trace_id, ctx.span_id, 1)
    assert lr.severity_number is SeverityNumber.WARN and lr.severity_text == "WARN" and lr.body == "hello"
    assert dict(lr.attributes or {}) == {"component": "session", "request_id": "r-1", "metadata.k": "[1,2]"}
    assert record.resource.attributes["service.name"] == "t"
    assert record.instrumentation_scope is not None and record.instrumentation_scope.name == "clawdbot_otel"
    processor.shutdown()


def test_each_record_is_exported_exactly_once_with_its_span_context() -> None:
    recorder = Recorder()
    processor = QueuedLogRecordProcessor(recorder, max_export_batch_size=2)
    t, provider, _ = _telemetry(processor)
    token = attach(set_baggage(CORRELATION_BAGGAGE_KEY, "req-9"))
    try:
        with t.request_span("agent") as span:
            t.log("INFO", "gateway", "inside")
            t.logger.info("via structlog", component="gateway")
    finally:
        detach(token)
    t.log("INFO", "gateway", "outside")
    provider.force_flush()
    provider.force_flush()
    records = recorder.records()
    assert [r.body.string_value for r in records] == ["inside", "via structlog", "outside"]
    ctx = span.span.get_span_context()
    for r in records[:2]:
        assert r.trace_id == ctx.trace_id.to_bytes(16, "big") and r.span_id == ctx.span_id.to_bytes(8, "big")
        assert r.flags == 1
        assert {a.key: a.value.string_value for a in r.attributes}["correlation_id"] == "req-9"
    assert records[2].trace_id == b"" and records[2].span_id == b""
    assert records[0].time_unix_nano == records[0].observed_time_unix_nano > 0
    processor.shutdown()


def test_sdk_records_of_other_emitters_share_the_queue() -> None:
    recorder = Recorder()
    processor = QueuedLogRecordProcessor(recorder)
    t, provider, _ = _telemetry(processor)
    t.log("INFO", "gateway", "facade")
    provider.get_logger("someone.else").emit(body="sdk", severity_number=SeverityNumber.INFO, severity_text="INFO",
                                             attributes={"x": 1})
    provider.force_flush()
    (request,) = recorder.requests
    scopes = {sl.scope.name: [r.body.string_value for r in sl.log_records]
              for rl in request.resource_logs for sl in rl.scope_logs}
    assert scopes == {"clawdbot_otel": ["facade"], "someone.else": ["sdk"]}
    processor.shutdown()


def test_a_processor_added_later_sees_the_facades_records_too() -> None:
    recorder = Recorder()
    processor = QueuedLogRecordProcessor(recorder)
    t, provider, _ = _telemetry(processor)
    t.log("INFO", "gateway", "before")
    later = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider.add_log_record_processor(SimpleLogRecordProcessor(later))
    t.log("INFO", "gateway", "after")
    provider.force_flush()
    assert recorder.bodies() == ["before", "after"]
    assert [r.log_record.body for r in later.get_finished_logs()] == ["after"]
    processor.shutdown()


def test_a_forked_child_exports_its_own_records_and_the_parent_its_own(tmp_path: Path) -> None:
    path = tmp_path / "logs.jsonl"
    processor = QueuedLogRecordProcessor(FileLogExporter(path), schedule_delay_millis=60_000)
    t, provider, _ = _telemetry(processor)
    t.log("INFO", "gateway", "parent before fork")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            t.log("INFO", "gateway", "child")
            provider.shutdown()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    t.log("INFO", "gateway", "parent after fork")
    provider.shutdown()
    bodies = [r["body"]["stringValue"] for line in path.read_text().splitlines()
              for rl in json.loads(line)["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    assert sorted(bodies) == ["child", "parent after fork", "parent before fork"]


# --- the exporters setup builds ------------------------------------------------------------------------

def test_the_file_exporter_writes_the_same_line_for_an_encoded_batch(tmp_path: Path) -> None:
    logger = LoggerProvider(resource=Resource.create({"service.name": "f"}), shutdown_on_exit=False).get_logger("s")
    items = [_item(logger), _item(logger, body="two", trace_id=0, span_id=0, flags=0)]
    encoded = FileLogExporter(tmp_path / "a.jsonl")
    payload, count = encode_items(items)
    assert encoded.export_encoded(payload, count) is LogRecordExportResult.SUCCESS
    FileLogExporter(tmp_path / "b.jsonl").export([item_to_sdk_record(i) for i in items])
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


@pytest.fixture
def http_collector() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/logs", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_exporter_sends_the_encoded_batch_as_is(http_collector: tuple[str, list[bytes]]) -> None:
    endpoint, bodies = http_collector
    exporter = otlp_log_exporter("http/protobuf", endpoint=endpoint)
    assert exporter.supports_encoded()  # type: ignore[attr-defined]
    processor = QueuedLogRecordProcessor(exporter)
    t, provider, _ = _telemetry(processor)
    t.log("INFO", "gateway", "over http", request_id="r-1")
    provider.force_flush()
    (body,) = bodies
    (record,) = ExportLogsServiceRequest.FromString(body).resource_logs[0].scope_logs[0].log_records
    assert record.body.string_value == "over http" and record.severity_text == "INFO"
    # the public export() path of the same exporter still works (other emitters, fallbacks)
    assert exporter.export([item_to_sdk_record(_item(provider.get_logger("x")))]) is LogRecordExportResult.SUCCESS
    assert len(bodies) == 2
    processor.shutdown()


def test_the_grpc_exporter_sends_the_encoded_batch() -> None:
    grpc = pytest.importorskip("grpc")
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

    received: list[ExportLogsServiceRequest] = []

    class Servicer(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request: ExportLogsServiceRequest, context: Any) -> ExportLogsServiceResponse:
            received.append(request)
            return ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Servicer(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        exporter = otlp_log_exporter("grpc", endpoint=f"http://127.0.0.1:{port}", insecure=True)
        assert exporter.supports_encoded()  # type: ignore[attr-defined]
        logger = LoggerProvider(shutdown_on_exit=False).get_logger("clawdbot_otel")
        items = [_item(logger), _item(logger, body="two")]
        payload, count = encode_items(items)
        assert exporter.export_encoded(payload, count) is LogRecordExportResult.SUCCESS  # type: ignore[attr-defined]
        assert exporter.export([item_to_sdk_record(items[0])]) is LogRecordExportResult.SUCCESS
        assert received[0] == ExportLogsServiceRequest.FromString(payload)
        assert received[1].resource_logs[0].scope_logs[0].log_records[0].body.string_value == "Request completed"
        exporter.shutdown()  # type: ignore[no-untyped-call]
    finally:
        server.stop(None)


def test_an_exporter_that_logs_through_the_bridge_does_not_deadlock_or_loop() -> None:
    """What an exporter logs while exporting reaches the sinks, never OTLP: with a dead collector,
    exporting "failed to export" would itself fail and log again, for ever."""
    import logging

    from clawdbot_otel._logging import StdlibBridgeHandler

    class Chatty(Recorder):
        def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
            logging.getLogger("chatty.exporter").warning("exported %d", count)
            return super().export_encoded(payload, count)

    recorder = Chatty()
    processor = QueuedLogRecordProcessor(recorder, synchronous=True)
    t, _, stream = _telemetry(processor)
    lib = logging.getLogger("chatty.exporter")
    lib.addHandler(StdlibBridgeHandler(t.logger))
    lib.propagate = False
    try:
        t.log("INFO", "gateway", "hello")
        processor.force_flush()
        t.log("INFO", "gateway", "again")
        processor.force_flush()
    finally:
        lib.handlers.clear()
        lib.propagate = True
    assert recorder.bodies() == ["hello", "again"]
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted((r["component"], r["message"]) for r in lines) == [
        ("chatty", "exported 1"), ("chatty", "exported 1"), ("gateway", "again"), ("gateway", "hello")]


def test_the_dropped_self_metric_stays_bounded_whatever_the_components() -> None:
    recorder = Recorder()
    recorder.release.clear()
    processor = QueuedLogRecordProcessor(recorder, max_queue_size=1, max_export_batch_size=1,
                                         schedule_delay_millis=60_000)
    t, provider, _ = _telemetry(processor)
    t.log("INFO", "gateway", "first")
    assert recorder.entered.wait(10)
    t.log("INFO", "gateway", "queued")
    for i in range(300):
        t.log("INFO", f"plugin-{i}", "dropped")  # free-form components must not become label values
    t.log("INFO", "gateway", "dropped too")
    assert {metric for (reason, metric) in t.dropped if reason == "log_queue_full"} == {"other", "gateway"}
    assert t.dropped[("log_queue_full", "other")] == 300
    recorder.release.set()
    provider.force_flush()

"""What the fast export path (CLAWDBOT_OTEL_FAST_EXPORT=1) buys: CPU per record, ours vs the SDK's, in one run.

    .venv/bin/python bench/export_bench.py [--spans 512] [--logs 20000] [--repeat 7]

Span export (a batch of the spans of agent turns: request, session, 2 model calls, 3 tool calls):
- the SDK's `encode_spans(batch).SerializeToString()` vs our `encode_spans_fast(batch)`: what both OTLP
  exporters (HTTP, and gRPC, whose stub serializes the message) do per batch. Our gRPC exporter sends the
  bytes through a stub without a serializer; for reference, the cost of parsing them back into a message
  for the SDK's generated stub (what it did before) is shown too.

Log export, end to end (the caller's work and the batch worker's encoding, process CPU of all threads,
each repetition ending with a flush so every record is encoded inside it; each exporter encodes to
OTLP protobuf bytes and drops them):
- facade, fast path: `Telemetry.log` -> tuple queue -> `encode_items`
- facade, CLAWDBOT_OTEL_FAST_EXPORT=0: `Telemetry.log` -> `Logger.emit` -> `BatchLogRecordProcessor` -> `encode_logs`
- structlog + the SDK (the natural alternative): a structlog logger whose chain adds level and ISO time,
  emits the OTLP record through `Logger.emit` (same attributes) into a `BatchLogRecordProcessor`, and
  renders the JSON line with `JSONRenderer`
- encoding alone: `encode_logs(records).SerializeToString()` vs `encode_items(items)`

Sides alternate, each side's best repetition is kept, and the gain (SDK / ours) is reported against
the rule of issue 9: a path that does not gain 1.5x is deleted in favour of the SDK's.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clawdbot_otel import StreamSink, Telemetry
from clawdbot_otel._log_export import LogItem, encode_items
from clawdbot_otel._log_queue import QueuedLogRecordProcessor
from clawdbot_otel._span_export import encode_spans_fast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_bench import EncodeOnlyLogs

GOAL = 1.5
RESOURCE = Resource.create({"service.name": "clawdbot-gateway", "service.instance.id": "bench",
                            "deployment.environment.name": "production"})


def turn_spans(turns: int) -> list[ReadableSpan]:
    """The spans of `turns` agent turns, as the facade's typed helpers build them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    t = Telemetry(tracer_provider=provider, log_sinks=[])
    for i in range(turns):
        with t.request_span("agent", request_id=f"req-{i}", body={"message": "hi", "agentId": "main"},
                            body_bytes=120, connection_id="conn-1", client_id="cli"), \
                t.session_span("main", model="claude-opus-4-5", provider="anthropic",
                               session_key="agent:main:main", run_id=f"run-{i}") as session:
            for _ in range(2):
                with t.model_call_span("claude-opus-4-5", provider="anthropic") as call:
                    call.update({"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
                                 "gen_ai.response.finish_reasons": ["tool_use"]})
            for k in range(3):
                with t.tool_call_span("read", call_id=f"call-{i}-{k}", params={"path": "README.md"}):
                    pass
            session.update({"gen_ai.usage.input_tokens": 2400, "gen_ai.usage.output_tokens": 600})
    provider.shutdown()
    return list(exporter.get_finished_spans())


def best_cpu_per_record(sides: dict[str, Callable[[], int]], repeat: int) -> dict[str, float]:
    """Best CPU ns per record of each side; a side runs once per repetition and returns its record count."""
    best = dict.fromkeys(sides, float("inf"))
    names = list(sides)
    for i in range(repeat):
        for name in names if i % 2 == 0 else reversed(names):
            gc.collect()
            start = time.process_time_ns()
            records = sides[name]()
            best[name] = min(best[name], (time.process_time_ns() - start) / records)
    return best


class LogSide:
    """n log calls and a flush; checks that the exporter got every record once."""

    def __init__(self, call: Callable[[], None], provider: LoggerProvider, exporter: EncodeOnlyLogs, n: int):
        self.call, self.provider, self.exporter, self.n = call, provider, exporter, n
        self.calls = 0

    def __call__(self) -> int:
        call = self.call
        for _ in range(self.n):
            call()
        self.provider.force_flush()
        self.calls += self.n
        return self.n

    def check(self, name: str) -> None:
        if self.exporter.records != self.calls:
            raise SystemExit(f"{name}: {self.calls} calls but {self.exporter.records} records exported")


def log_sides(n: int) -> dict[str, LogSide]:
    tracer_provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    span = tracer_provider.get_tracer("bench").start_span("session")  # records carry a span context
    sides: dict[str, LogSide] = {}
    queue = max(n, 2048)  # room for a whole repetition: nothing dropped

    def facade(processor_class: Any) -> LogSide:
        exporter = EncodeOnlyLogs()
        provider = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
        provider.add_log_record_processor(processor_class(exporter, max_queue_size=queue))
        t = Telemetry(tracer_provider=tracer_provider, logger_provider=provider,
                      log_sinks=[StreamSink(io.BytesIO())])

        def call() -> None:
            t.log("INFO", "gateway", "Request completed", request_id="r-1", duration_ms=12.5,
                  metadata={"method": "agent"}, span=None)

        return LogSide(call, provider, exporter, n)

    sides["facade, fast path"] = facade(QueuedLogRecordProcessor)
    sides["facade, FAST_EXPORT=0"] = facade(BatchLogRecordProcessor)

    exporter = EncodeOnlyLogs()
    provider = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_queue_size=queue))
    log = structlog_with_otlp(provider, io.BytesIO())

    def structlog_call() -> None:
        log.info("Request completed", component="gateway", request_id="r-1", duration_ms=12.5, method="agent")

    sides["structlog + SDK batch"] = LogSide(structlog_call, provider, exporter, n)
    from opentelemetry import context, trace

    context.attach(trace.set_span_in_context(span))
    return sides


def structlog_with_otlp(provider: LoggerProvider, stream: io.BytesIO) -> Any:
    """The natural structlog set-up for OTLP: level, ISO time, an OTLP record through the SDK's
    `Logger.emit` (the event's fields as attributes), then the JSON line (orjson) to `stream`."""
    otel_logger = provider.get_logger("app")
    severity = {"info": SeverityNumber.INFO, "warning": SeverityNumber.WARN, "error": SeverityNumber.ERROR}

    def emit_otlp(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        attributes = {k: v if isinstance(v, str | bool | int | float) else orjson.dumps(v).decode()
                      for k, v in event.items() if k not in ("event", "level", "timestamp")}
        otel_logger.emit(body=event["event"], severity_number=severity.get(method, SeverityNumber.INFO),
                         severity_text=event["level"].upper(), attributes=attributes)
        return event

    return structlog.wrap_logger(
        structlog.BytesLogger(stream),
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    emit_otlp, structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        wrapper_class=structlog.make_filtering_bound_logger(20), cache_logger_on_first_use=True,
    )


def log_encoding_sides(n: int) -> dict[str, Callable[[], int]]:
    provider = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    in_memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    processor = QueuedLogRecordProcessor(in_memory, synchronous=True)
    provider.add_log_record_processor(processor)
    logger = provider.get_logger("clawdbot_otel")
    item: LogItem = (1_795_000_000_123_456_789, 1_795_000_000_123_456_789, 9, "INFO", "Request completed",
                     {"component": "gateway", "request_id": "r-1", "duration_ms": 12.5, "metadata.method": "agent"},
                     0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1, logger)
    items = [item] * n
    for _ in range(n):
        processor.submit(item)
    records: list[ReadableLogRecord] = list(in_memory.get_finished_logs())
    if encode_logs(records).SerializeToString() != encode_items(items)[0]:
        raise SystemExit("encode_items and encode_logs disagree")
    return {"encode_logs": lambda: len(encode_logs(records).SerializeToString()) and n,
            "encode_items": lambda: len(encode_items(items)[0]) and n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=512, help="spans per export batch (the SDK's default)")
    parser.add_argument("--logs", type=int, default=20_000, help="log calls per repetition")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    spans = turn_spans(max(args.spans // 7, 1))
    if ExportTraceServiceRequest.FromString(encode_spans_fast(spans)) != encode_spans(spans):
        raise SystemExit("encode_spans_fast and encode_spans disagree")
    n = len(spans)
    span_rounds = max(20_000 // n, 1)  # enough batches per repetition for a readable CPU clock

    def batches(fn: Callable[[], object]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(span_rounds):
                fn()
            return span_rounds * n
        return run

    span_cpu = best_cpu_per_record({
        "sdk": batches(lambda: encode_spans(spans).SerializeToString()),
        "ours": batches(lambda: encode_spans_fast(spans)),
        "ours parsed": batches(lambda: ExportTraceServiceRequest.FromString(encode_spans_fast(spans))
                               .SerializeToString()),
    }, args.repeat)

    sides = log_sides(args.logs)
    for side in sides.values():  # warm-up: caches, the first second's timestamp
        side.n, warm = min(args.logs, 1000), side.n
        side()
        side.n = warm
    log_cpu = best_cpu_per_record(dict(sides), args.repeat)
    for name, side in sides.items():
        side.check(name)
    encode_cpu = best_cpu_per_record(log_encoding_sides(min(args.logs, 512)), args.repeat * 10)

    rows = [
        ("span encoding (per span)", span_cpu["sdk"], span_cpu["ours"], "encode_spans"),
        ("  (ref.) ours parsed back for the SDK's gRPC stub", span_cpu["sdk"], span_cpu["ours parsed"],
         "encode_spans"),
        ("log record, end to end (per record)", log_cpu["facade, FAST_EXPORT=0"], log_cpu["facade, fast path"],
         "facade, FAST_EXPORT=0"),
        ("log record, end to end (per record)", log_cpu["structlog + SDK batch"], log_cpu["facade, fast path"],
         "structlog + SDK batch"),
        ("log encoding alone (per record)", encode_cpu["encode_logs"], encode_cpu["encode_items"], "encode_logs"),
    ]
    print(f"{len(spans)} spans per batch ({n // 7} turns of 7 spans); {args.logs} log calls per repetition; "
          f"best of {args.repeat}, process CPU")
    print(f"{'path':50} {'SDK side':>22} {'SDK us':>8} {'ours us':>8} {'gain':>6}  rule (>= {GOAL}x)")
    for name, sdk_ns, ours_ns, sdk_name in rows:
        gain = sdk_ns / ours_ns
        print(f"{name:50} {sdk_name:>22} {sdk_ns / 1000:8.2f} {ours_ns / 1000:8.2f} {gain:5.2f}x  "
              f"{'keep' if gain >= GOAL else 'DELETE'}")


if __name__ == "__main__":
    main()

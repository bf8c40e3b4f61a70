"""Facade overhead against the raw OpenTelemetry SDK, in one run.

    .venv/bin/python bench/core_bench.py [--n 100000] [--repeat 7]

Compares, with identical providers, processors and attributes:
- metrics: `Telemetry.increment` vs `counter.add`            (goal: <= 1.10x)
- spans:   `Telemetry.start_span` vs `tracer.start_as_current_span` (goal: <= 1.15x)
- logs:    `Telemetry.log` (JSON line + OTLP record) vs a stdlib logger through the SDK's
           `LoggingHandler` (OTLP record only)                 (goal: <= 0.50x)
Prints the best-of-`repeat` time per call and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from clawdbot_otel import StreamSink, Telemetry


class NullSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullLogs(LogRecordExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def best_ns_per_call(fn: Callable[[], None], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n, repeat = args.n, args.repeat

    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(NullSpans(), max_queue_size=1 << 20))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(NullLogs(), max_queue_size=1 << 20))
    telemetry = Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider,
                          logger_provider=logger_provider, log_sinks=[StreamSink(io.BytesIO())])

    raw_counter = meter_provider.get_meter("raw").create_counter("raw.requests", "{request}")
    labels = {"method": "agent", "status": "success"}
    results: list[tuple[str, float, float, float]] = []

    raw = best_ns_per_call(lambda: raw_counter.add(1, labels), n, repeat)
    ours = best_ns_per_call(lambda: telemetry.increment("gateway_requests_total", labels), n, repeat)
    results.append(("metric increment", raw, ours, 1.10))

    tracer = tracer_provider.get_tracer("raw")
    attrs = {"clawdbot.span.category": "tool_call", "gen_ai.operation.name": "execute_tool",
             "gen_ai.tool.name": "read", "gen_ai.tool.call.id": "call-1"}
    facade_attrs = {k: v for k, v in attrs.items() if k != "clawdbot.span.category"}

    def raw_span() -> None:
        with tracer.start_as_current_span("execute_tool read", attributes=attrs):
            pass

    def facade_span() -> None:
        with telemetry.start_span("tool_call", "execute_tool read", attributes=facade_attrs):
            pass

    span_n = max(n // 5, 1000)
    raw = best_ns_per_call(raw_span, span_n, repeat)
    ours = best_ns_per_call(facade_span, span_n, repeat)
    results.append(("span", raw, ours, 1.15))

    std_logger = logging.getLogger("bench.stdlib")
    std_logger.propagate = False
    std_logger.setLevel(logging.INFO)
    std_logger.addHandler(LoggingHandler(logger_provider=logger_provider))
    extra = {"component": "gateway", "request_id": "r-1"}

    def std_log() -> None:
        std_logger.info("Request completed", extra=extra)

    def facade_log() -> None:
        telemetry.log("INFO", "gateway", "Request completed", request_id="r-1")

    log_n = max(n // 5, 1000)
    raw = best_ns_per_call(std_log, log_n, repeat)
    ours = best_ns_per_call(facade_log, log_n, repeat)
    results.append(("log (vs stdlib + OTel LoggingHandler)", raw, ours, 0.50))

    print(f"{'path':40} {'raw ns/call':>12} {'facade ns/call':>15} {'ratio':>7} {'goal':>6}")
    for name, raw_ns, ours_ns, goal in results:
        ratio = ours_ns / raw_ns
        verdict = "ok" if ratio <= goal else "MISS"
        print(f"{name:40} {raw_ns:12.0f} {ours_ns:15.0f} {ratio:7.2f} {goal:6.2f} {verdict}")
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main()

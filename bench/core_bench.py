"""Facade overhead against the raw OpenTelemetry SDK, in one run.

    .venv/bin/python bench/core_bench.py [--n 100000] [--repeat 7]

Compares, with identical providers, processors and attributes:
- metrics: `Telemetry.increment` vs `counter.add`            (goal: <= 1.10x)
- spans:   `Telemetry.start_span` vs `tracer.start_as_current_span` (goal: <= 1.15x)
- logs:    `Telemetry.log` (JSON line + OTLP record) vs a stdlib logger through the SDK's
           `LoggingHandler` (OTLP record only)                 (goal: <= 0.50x)
Metrics and spans: the best-of-`repeat` wall time per call; the two sides alternate, and the span
processor is flushed before each timed block (its export thread must not run inside the other side's).

Logs are measured so that moving work to a background thread is not a win: each side has its own
logger provider whose exporter really encodes every batch to OTLP protobuf bytes and drops them
(`EncodeOnlyLogs`: the SDK's `encode_logs(...).SerializeToString()` for SDK records, the already
encoded request for the facade's queued records), each side's batch processor keeps the SDK's
defaults (batch 512, 1 s delay; a queue big enough for one repetition, so nothing is dropped), and a
timed repetition is `n` calls plus `force_flush()`, so every record of the repetition is encoded
inside it. The time is the process CPU time of the repetition (all threads: the batch workers'
encoding counts, even when it ran on the other core) and, for reference, its wall time. Repetitions
of the two sides alternate, and each side's best is kept. The run fails if an exporter did not get
every record exactly once.

For a count that does not depend on the machine's load, run one side alone under callgrind at two
sizes and take the difference per call (setup cancels out; all threads and the flush are counted):

    for side in stdlib facade; do for n in 2000 12000; do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/core_bench.py --only $side --n $n 2>&1 | grep Collected
    done; done
    # instructions per call = (Collected(12000) - Collected(2000)) / 10000
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from clawdbot_otel import StreamSink, Telemetry
from clawdbot_otel._log_queue import QueuedLogRecordProcessor
from clawdbot_otel.conventions import SPAN_CATEGORY_ATTRIBUTE


class NullSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class EncodeOnlyLogs(LogRecordExporter):
    """What an OTLP exporter does before it sends: encode the batch to protobuf bytes. Then drop them."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.bytes += len(encode_logs(batch).SerializeToString())
        self.records += len(batch)
        return LogRecordExportResult.SUCCESS

    def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
        self.bytes += len(payload)
        self.records += count
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def best_pair_ns(raw: Callable[[], None], ours: Callable[[], None], n: int, repeat: int,
                 settle: Callable[[], object] = lambda: None) -> tuple[float, float]:
    """Best ns/call of each side; the sides alternate, and `settle()` (e.g. a span flush) runs before
    each timed block so one side's background export never runs during the other's timing."""
    best = [float("inf"), float("inf")]
    for i in range(repeat):
        order = ((0, raw), (1, ours)) if i % 2 == 0 else ((1, ours), (0, raw))
        for side, fn in order:
            settle()
            gc.collect()
            start = time.perf_counter_ns()
            for _ in range(n):
                fn()
            best[side] = min(best[side], (time.perf_counter_ns() - start) / n)
    return best[0], best[1]


class LogSide:
    """One side of the log comparison: n calls and a flush, timed in CPU and wall time."""

    def __init__(self, name: str, call: Callable[[], None], provider: LoggerProvider, exporter: EncodeOnlyLogs):
        self.name, self.call, self.provider, self.exporter = name, call, provider, exporter
        self.calls = 0
        self.best_cpu = self.best_wall = float("inf")

    def run(self, n: int) -> None:
        call = self.call
        for _ in range(n):
            call()
        self.provider.force_flush()
        self.calls += n

    def timed(self, n: int) -> None:
        gc.collect()
        cpu, wall = time.process_time_ns(), time.perf_counter_ns()
        self.run(n)
        self.best_wall = min(self.best_wall, (time.perf_counter_ns() - wall) / n)
        self.best_cpu = min(self.best_cpu, (time.process_time_ns() - cpu) / n)

    def check(self) -> None:
        if self.exporter.records != self.calls:
            raise SystemExit(f"{self.name}: {self.calls} calls but {self.exporter.records} records exported")


def log_sides(tracer_provider: TracerProvider, meter_provider: MeterProvider, queue: int) -> tuple[LogSide, LogSide]:
    std_exporter, facade_exporter = EncodeOnlyLogs(), EncodeOnlyLogs()
    std_provider = LoggerProvider(shutdown_on_exit=False)
    std_provider.add_log_record_processor(BatchLogRecordProcessor(std_exporter, max_queue_size=queue))
    facade_provider = LoggerProvider(shutdown_on_exit=False)
    facade_provider.add_log_record_processor(QueuedLogRecordProcessor(facade_exporter, max_queue_size=queue))

    std_logger = logging.getLogger("bench.stdlib")
    std_logger.propagate = False
    std_logger.setLevel(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        std_logger.addHandler(LoggingHandler(logger_provider=std_provider))
    extra = {"component": "gateway", "request_id": "r-1"}

    def std_log() -> None:
        std_logger.info("Request completed", extra=extra)

    telemetry = Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider,
                          logger_provider=facade_provider, log_sinks=[StreamSink(io.BytesIO())])

    def facade_log() -> None:
        telemetry.log("INFO", "gateway", "Request completed", request_id="r-1")

    return (LogSide("stdlib", std_log, std_provider, std_exporter),
            LogSide("facade", facade_log, facade_provider, facade_exporter))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=("stdlib", "facade"),
                        help="run n log calls of one side (and a flush), untimed: for callgrind")
    args = parser.parse_args()
    n, repeat = args.n, args.repeat

    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(NullSpans(), max_queue_size=1 << 20))

    if args.only:
        std_side, facade_side = log_sides(tracer_provider, meter_provider, max(n, 2048))
        side = std_side if args.only == "stdlib" else facade_side
        side.run(n)
        side.check()
        side.provider.shutdown()
        return

    telemetry = Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider,
                          log_sinks=[StreamSink(io.BytesIO())])
    raw_counter = meter_provider.get_meter("raw").create_counter("raw.requests", "{request}")
    labels = {"method": "agent", "status": "success"}
    results: list[tuple[str, float, float, float]] = []

    raw, ours = best_pair_ns(lambda: raw_counter.add(1, labels),
                             lambda: telemetry.increment("gateway_requests_total", labels), n, repeat)
    results.append(("metric increment", raw, ours, 1.10))

    tracer = tracer_provider.get_tracer("raw")
    attrs = {SPAN_CATEGORY_ATTRIBUTE: "tool_call", "gen_ai.operation.name": "execute_tool",
             "gen_ai.tool.name": "read", "gen_ai.tool.call.id": "call-1"}
    facade_attrs = {k: v for k, v in attrs.items() if k != SPAN_CATEGORY_ATTRIBUTE}

    def raw_span() -> None:
        with tracer.start_as_current_span("execute_tool read", attributes=attrs):
            pass

    def facade_span() -> None:
        with telemetry.start_span("tool_call", "execute_tool read", attributes=facade_attrs):
            pass

    def helper_span() -> None:  # the typed helper: builds the GenAI attributes and the name itself
        with telemetry.tool_call_span("read", call_id="call-1"):
            pass

    helper_attrs = {**attrs, "gen_ai.tool.type": "function"}

    def raw_helper_equivalent() -> None:
        with tracer.start_as_current_span("execute_tool read", attributes=helper_attrs):
            pass

    span_n = max(n // 5, 1000)
    flush = tracer_provider.force_flush
    raw, ours = best_pair_ns(raw_span, facade_span, span_n, repeat, flush)
    results.append(("span", raw, ours, 1.15))
    raw, ours = best_pair_ns(raw_helper_equivalent, helper_span, span_n, repeat, flush)
    results.append(("span, typed helper tool_call_span", raw, ours, 1.15))

    log_n = max(n // 5, 1000)
    std_side, facade_side = log_sides(tracer_provider, meter_provider, max(log_n, 2048))
    for side in (std_side, facade_side):  # warm-up: caches, first-second timestamp formatting
        side.run(min(log_n, 1000))
    for i in range(repeat):
        for side in (std_side, facade_side) if i % 2 == 0 else (facade_side, std_side):
            side.timed(log_n)
    for side in (std_side, facade_side):
        side.check()
    results.append(("log, CPU incl. encode (vs stdlib + OTel)", std_side.best_cpu, facade_side.best_cpu, 0.50))
    results.append(("log, wall incl. flush (reference)", std_side.best_wall, facade_side.best_wall, 0.50))

    print(f"{'path':42} {'raw ns/call':>12} {'facade ns/call':>15} {'ratio':>7} {'goal':>6}")
    for name, raw_ns, ours_ns, goal in results:
        ratio = ours_ns / raw_ns
        verdict = "ok" if ratio <= goal else "MISS"
        print(f"{name:42} {raw_ns:12.0f} {ours_ns:15.0f} {ratio:7.2f} {goal:6.2f} {verdict}")
    print(f"OTLP bytes per log record: stdlib {std_side.exporter.bytes / std_side.calls:.0f}, "
          f"facade {facade_side.exporter.bytes / facade_side.calls:.0f} "
          f"({std_side.calls} and {facade_side.calls} records, each exported once)")
    tracer_provider.shutdown()
    std_side.provider.shutdown()
    facade_side.provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main()

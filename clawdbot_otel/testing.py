"""Test helpers shipped with the library: a `Telemetry` over in-memory exporters and readers.

    from clawdbot_otel.testing import capture_telemetry

    with capture_telemetry() as cap:
        cap.telemetry.increment("gateway_requests_total", {"method": "agent", "status": "success"})
        assert cap.metric_points("gateway.requests")[0].value == 1

Providers are passed explicitly; nothing global is touched. Span and trace ids are deterministic
(`IncrementalIdGenerator`) and so is the log clock when `clock` is given.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from ._facade import Telemetry
from ._log_queue import QueuedLogRecordProcessor
from ._logging import StreamSink
from ._redact import Redactor
from ._redact_spans import RedactingSpanExporter
from ._setup import histogram_views
from .conventions import SPAN_CATEGORY_ATTRIBUTE

__all__ = ["Capture", "IncrementalIdGenerator", "capture_telemetry"]


class IncrementalIdGenerator(IdGenerator):
    """Trace and span ids 1, 2, 3, ...: exact, readable ids in assertions."""

    def __init__(self) -> None:
        self._trace = itertools.count(1)
        self._span = itertools.count(1)

    def generate_trace_id(self) -> int:
        return next(self._trace)

    def generate_span_id(self) -> int:
        return next(self._span)


@dataclass
class Capture:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    logs: InMemoryLogRecordExporter
    log_stream: io.BytesIO
    log_processor: QueuedLogRecordProcessor | None = None
    _collected: list[Metric] = field(default_factory=list)

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def spans_by_category(self, category: str) -> list[ReadableSpan]:
        return [s for s in self.finished_spans() if (s.attributes or {}).get(SPAN_CATEGORY_ATTRIBUTE) == category]

    def collect_metrics(self) -> dict[str, Metric]:
        """Collect once; metric by OTel name."""
        data = self.metrics.get_metrics_data()
        out: dict[str, Metric] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def metric_points(self, otel_name: str) -> list[Any]:
        metric = self.collect_metrics().get(otel_name)
        return list(metric.data.data_points) if metric is not None else []

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON records written to the log stream, parsed."""
        return [orjson.loads(line) for line in self.log_stream.getvalue().splitlines() if line]

    def otlp_logs(self) -> list[ReadableLogRecord]:
        """The OTLP log records exported so far (queued ones are flushed first)."""
        if self.log_processor is not None:
            self.log_processor.force_flush()
        return list(self.logs.get_finished_logs())


@contextlib.contextmanager
def capture_telemetry(
    *, strict: bool = True, resource: Resource | None = None, clock: Callable[[], int] | None = None,
    id_generator: IdGenerator | None = None, **telemetry_kwargs: Any,
) -> Iterator[Capture]:
    """A `Telemetry` (strict by default) over in-memory exporters and readers, shut down on exit.

    Span and trace ids count up from 1 (`IncrementalIdGenerator`) unless `id_generator` says otherwise
    (two captures in one test whose ids must not coincide).
    """
    resource = resource or Resource.create({"service.name": "clawdbot-otel-test"})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource, id_generator=id_generator or IncrementalIdGenerator(),
                                     shutdown_on_exit=False)
    redactor = telemetry_kwargs.pop("redactor", None) or Redactor()
    # spans pass the redactor on their way out, as in setup()
    tracer_provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(spans, redactor)))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=histogram_views(),
                                   shutdown_on_exit=False)
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    # The facade's queued path, exporting each record at once (SDK records for the in-memory exporter).
    log_processor = QueuedLogRecordProcessor(logs, synchronous=True)
    logger_provider.add_log_record_processor(log_processor)
    stream = io.BytesIO()
    # The captured stream comes first; sinks under test (e.g. LevelFileSink) are added after it.
    sinks = [StreamSink(stream), *telemetry_kwargs.pop("log_sinks", ())]
    telemetry = Telemetry(
        meter_provider=meter_provider, tracer_provider=tracer_provider, logger_provider=logger_provider,
        strict=strict, log_sinks=sinks, log_level=telemetry_kwargs.pop("log_level", "DEBUG"),
        log_clock=clock or time.time_ns, redactor=redactor, **telemetry_kwargs,
    )
    try:
        yield Capture(telemetry, spans, reader, logs, stream, log_processor)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()

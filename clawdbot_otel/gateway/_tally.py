"""What one process produced: traces, spans, metric series and log records, for the demo's summary."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

__all__ = ["Produced", "TelemetryTally"]


@dataclass(frozen=True, slots=True)
class Produced:
    traces: int
    spans: int
    metric_series: int
    log_records: int

    def line(self) -> str:
        return (f"{self.traces} traces, {self.spans} spans, {self.metric_series} metric series, "
                f"{self.log_records} log records")


class TelemetryTally(SpanProcessor):
    """A span processor (ended spans and their traces), a log sink (records) and a metric reader
    (series, i.e. data points of the last collection) in one: pass `reader` to `setup(metric_readers=...)`,
    `self` as a log sink, and add `self` to the tracer provider."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self._lock = threading.Lock()
        self._trace_ids: set[int] = set()
        self._spans = 0
        self._log_records = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        with self._lock:
            self._spans += 1
            if context is not None:
                self._trace_ids.add(context.trace_id)

    def write(self, line: bytes, level: str, component: str) -> None:
        with self._lock:
            self._log_records += 1

    def produced(self) -> Produced:
        data = self.reader.get_metrics_data()
        series = sum(
            len(metric.data.data_points)
            for rm in (data.resource_metrics if data is not None else ())
            for sm in rm.scope_metrics
            for metric in sm.metrics
        )
        with self._lock:
            return Produced(len(self._trace_ids), self._spans, series, self._log_records)

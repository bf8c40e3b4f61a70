"""The embedded default: OTLP-JSON lines in local files, when no OTLP endpoint is configured.

One line per export batch, in the OTLP JSON encoding that the collector's `otlpjsonfile` receiver
reads, so nothing recorded offline is lost: it can be replayed into a collector later.
Each line is one `write` on a file opened for append, so forked processes can share a file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._span_export import encode_spans_fast

__all__ = ["FileLogExporter", "FileMetricExporter", "FileSpanExporter"]


class _JsonLines:
    __slots__ = ("_lock", "path")

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def write(self, message: Any) -> bool:
        line = json_format.MessageToJson(message, indent=None).replace("\n", " ") + "\n"
        data = line.encode()
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
        except OSError:
            return False
        return True


class FileSpanExporter(SpanExporter):
    """`fast`: encode with `encode_spans_fast` (the same message as the SDK's `encode_spans`, sooner)."""

    def __init__(self, path: Path, *, fast: bool = True) -> None:
        self._out = _JsonLines(path)
        self._fast = fast

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        fast = self._fast
        ok = self._out.write(ExportTraceServiceRequest.FromString(encode_spans_fast(spans)) if fast
                             else encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class FileMetricExporter(MetricExporter):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._out = _JsonLines(path)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any) -> MetricExportResult:
        ok = self._out.write(encode_metrics(metrics_data))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        return None


class FileLogExporter(LogRecordExporter):
    def __init__(self, path: Path) -> None:
        self._out = _JsonLines(path)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = self._out.write(encode_logs(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
        """A batch the fast path encoded (`_log_queue`): the same message, so the same line."""
        ok = self._out.write(ExportLogsServiceRequest.FromString(payload))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None

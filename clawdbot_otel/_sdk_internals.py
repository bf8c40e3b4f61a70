"""Every use of the OpenTelemetry SDK's private parts, in one place, behind one switch.

CLAWDBOT_OTEL_FAST_EXPORT=1 (the default) turns on the fast export path: the facade keeps counter
sums and histogram buckets per label set and hands them to the SDK when a reader collects
(`metric_deferral`, `HistogramSink`); spans and the facade's log records are encoded to OTLP protobuf
bytes by our own encoders (`_span_export`, `_log_export`), log records travel as small tuples through
`_log_queue.QueuedLogRecordProcessor`, and the SDK's OTLP exporters below send those bytes.
CLAWDBOT_OTEL_FAST_EXPORT=0 uses the SDK's own instruments, exporters and processors throughout
(`counter.add` and `histogram.record` per call, `OTLPSpanExporter`, `OTLPLogExporter`,
`BatchSpanProcessor`, `BatchLogRecordProcessor`, `Logger.emit`): the exported records are the same
(the differential tests in tests/core/test_fast_export.py and tests/core/test_fast_counting.py check
it), only slower. bench/export_bench.py and bench/turn_cost_bench.py measure the difference.

The private names used here (SDK 1.45, see docs/upgrading-the-sdk.md) are each probed before use: when
one is missing, that object takes the SDK's public path instead of failing.
- `Logger._multi_log_record_processor._log_record_processors`, `Logger._logger_config.is_enabled`,
  `Logger._logger_metrics`, `Logger._log_record_limits`: the facade's route to the queue (`QueueRoute`)
- OTLP/HTTP exporters: `_client.export(bytes)`, `_metrics.export_operation`, `_max_request_size`,
  `_shutdown`, `http._common._is_request_too_large`: the send step of `export()` without its encode step
- OTLP/gRPC exporters: `_export(data)` with `_translate_data` and `_count_data` overridden, and
  `_initialize_channel_and_stub` extended to put a stub that sends bytes on the SDK's `_channel` (`_client`)
- `MetricExporter._preferred_temporality` / `_preferred_aggregation`: to wrap an exporter faithfully
- `MeterProvider._sdk_config.exemplar_filter`: whether the facade may keep metric updates until a
  collection (`metric_deferral`; the fast path for metrics)
- `MeterProvider._measurement_consumer._reader_storages`, `MetricReaderStorage._instrument_view_instrument_matches`,
  `_ViewInstrumentMatch._view._attribute_keys` / `_attributes_aggregation`, `_hash_attributes`, and the
  histogram aggregation's `_lock`, `_value`, `_sum`, `_min`, `_max`, `_record_min_max`, `_boundaries`,
  `_get_empty_bucket_counts`: `HistogramSink`, which adds the values the facade kept (`KeptValues`) to
  a label set's aggregations as the SDK's `aggregate` would have, and takes over a label set's first
  value
- `Tracer._span_limits`, `_instrumentation_scope`, `_tracer_config.is_enabled`, `_tracer_metrics`,
  `SynchronousMultiSpanProcessor._span_processors`, `BoundedAttributes._immutable`: `FinishedSpanRoute`,
  which hands a span built as data (`_deferred_spans.DeferredSpan`: every span the facade starts) to the
  span processors finished, as `Span.end` would (the fast path for spans)

Not counted as internals: `opentelemetry.sdk._logs` and `opentelemetry.exporter.otlp.proto.common._log_encoder`
are the only homes of the SDK's logs API and `encode_logs` (its own exporters import them from there), and
`opentelemetry.context._SUPPRESS_INSTRUMENTATION_KEY` is the API's key that every instrumentation sets.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import Logger, LoggerProvider, LogRecordLimits
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SynchronousMultiSpanProcessor, Tracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

from ._span_export import encode_spans_fast

__all__ = [
    "FAST_EXPORT_ENV",
    "FinishedSpanRoute",
    "HistogramSink",
    "KeptValues",
    "QueueRoute",
    "exporter_preferences",
    "fast_export_enabled",
    "freeze",
    "log_record_limits",
    "metric_deferral",
    "otlp_log_exporter",
    "otlp_span_exporter",
    "processors_of",
]

FAST_EXPORT_ENV = "CLAWDBOT_OTEL_FAST_EXPORT"
_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}

_log = logging.getLogger("clawdbot_otel.export")


def fast_export_enabled(env: Mapping[str, str] | None = None) -> bool:
    """CLAWDBOT_OTEL_FAST_EXPORT: on unless set to 0/false/no/off (anything else unknown: on, said once)."""
    text = (os.environ if env is None else env).get(FAST_EXPORT_ENV, "").strip().lower()
    if text and text not in _ON | _OFF:
        _log.warning("clawdbot-otel: %s=%r is not 0 or 1; the fast export path stays on", FAST_EXPORT_ENV, text)
    return text not in _OFF


# --- logs: the facade's route to the queue ------------------------------------------------------------

def log_record_limits(logger: Logger) -> LogRecordLimits:
    """The attribute limits `Logger.emit` would apply (the SDK's defaults when they cannot be read)."""
    limits = getattr(logger, "_log_record_limits", None)
    return limits if isinstance(limits, LogRecordLimits) else LogRecordLimits()


def processors_of(provider: Any) -> tuple[Any, ...] | None:
    """An SDK logger provider's processors (None when they cannot be read)."""
    if not isinstance(provider, LoggerProvider):
        return None
    processors = getattr(getattr(provider, "_multi_log_record_processor", None), "_log_record_processors", None)
    return processors if type(processors) is tuple else None


class QueueRoute:
    """Whether a record of `logger` may skip `Logger.emit` for the provider's only processor, checked per
    record: a processor added later (or a logger disabled by a configurator) sends records back through
    `Logger.emit`, so that everything the SDK would do still happens."""

    __slots__ = ("_config", "_holder", "_logger", "_processors", "count_created", "processor")

    def __init__(self, logger: Logger, processor: Any, holder: Any, processors: tuple[Any, ...]) -> None:
        self.processor = processor
        self._logger = logger
        self._holder = holder
        self._processors = processors
        # the SDK's own `otel.sdk.log.created` counter, when OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED is set
        sdk_metrics = getattr(logger, "_logger_metrics", None)
        self.count_created: Callable[[], None] | None = (
            sdk_metrics.emit_log if sdk_metrics is not None and type(sdk_metrics).__name__ != "NoOpLoggerMetrics"
            else None
        )

    @classmethod
    def of(cls, provider: Any, logger: Any, kind: type) -> QueueRoute | None:
        """The route when `provider`'s only processor is a `kind` and its internals are as expected."""
        processors = processors_of(provider)
        if processors is None or len(processors) != 1 or not isinstance(processors[0], kind):
            return None
        if not isinstance(logger, Logger) or not hasattr(getattr(logger, "_logger_config", None), "is_enabled"):
            return None
        return cls(logger, processors[0], provider._multi_log_record_processor, processors)

    def open(self) -> bool:
        return self._holder._log_record_processors is self._processors and self._logger._logger_config.is_enabled


# --- exporters that send our bytes ---------------------------------------------------------------------

class _Encoded:
    """A pre-encoded log batch travelling through the gRPC exporter's own send path (its retries)."""

    __slots__ = ("count", "payload")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count

    def __len__(self) -> int:
        return self.count


def _http_send(exporter: Any, payload: bytes, count: int, failure: Any) -> Any:
    """OTLP/HTTP `export()` after its encode step: size check, send, the exporter's own metrics.
    None when the exporter's internals are not the ones this was written for."""
    from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
    from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

    send = getattr(getattr(exporter, "_client", None), "export", None)
    metrics = getattr(exporter, "_metrics", None)
    if metrics is None or not callable(send) or not hasattr(exporter, "_max_request_size"):
        return None
    with metrics.export_operation(count) as result:
        if _is_request_too_large(payload, exporter._max_request_size):
            _log.warning("clawdbot-otel: dropping an export of %d bytes: over max_request_size", len(payload))
            result.error = RequestPayloadTooLargeError(f"{len(payload)} bytes")
            return failure
        sent = send(payload)
        if not sent.success:
            result.error = sent.error
            result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None
            return failure
    return True


@functools.cache
def _http_span_class() -> type[SpanExporter]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    class FastOTLPHttpSpanExporter(OTLPSpanExporter):
        """The SDK's OTLP/HTTP span exporter, encoding with `encode_spans_fast`."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if self._shutdown:
                return super().export(spans)
            sent = _http_send(self, encode_spans_fast(spans), len(spans), SpanExportResult.FAILURE)
            if sent is None:
                return super().export(spans)
            return SpanExportResult.SUCCESS if sent is True else SpanExportResult.FAILURE

    return FastOTLPHttpSpanExporter


class _BytesStub:
    """A stub whose `Export` sends an already serialized request: the gRPC channel's own call with no
    request serializer (the generated stub would serialize a message we would first have to parse)."""

    def __init__(self, channel: Any, method: str, response: Any) -> None:
        self.Export = channel.unary_unary(method, request_serializer=None,
                                          response_deserializer=response.FromString)


def _bytes_stub_installer(base: type, method: str, response: Any) -> Callable[[Any], None]:
    """`_initialize_channel_and_stub` for a subclass of the OTLP/gRPC exporter `base` (the SDK calls it at
    start and to reconnect): the SDK's channel, our bytes stub."""

    def install(exporter: Any) -> None:
        base._initialize_channel_and_stub(exporter)  # type: ignore[attr-defined]
        channel = getattr(exporter, "_channel", None)
        if channel is not None:
            exporter._client = _BytesStub(channel, method, response)

    return install


@functools.cache
def _grpc_span_class() -> type[SpanExporter]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    class FastOTLPGrpcSpanExporter(OTLPSpanExporter):
        """The SDK's OTLP/gRPC span exporter (retries, reconnection, metrics), sending `encode_spans_fast`'s
        bytes as they are."""

        _initialize_channel_and_stub = _bytes_stub_installer(
            OTLPSpanExporter, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", ExportTraceServiceResponse)

        def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
            payload = encode_spans_fast(data)
            if isinstance(getattr(self, "_client", None), _BytesStub):
                return payload
            return ExportTraceServiceRequest.FromString(payload)  # the SDK's own stub: it wants a message

    return FastOTLPGrpcSpanExporter


_SDK_EXPORTERS = {
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("logs", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
    ("logs", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
}


def _sdk_exporter(signal: str, protocol: str, kwargs: dict[str, Any]) -> Any:
    """The SDK's own OTLP exporter (imported on demand: gRPC is heavy)."""
    module, name = _SDK_EXPORTERS[(signal, "grpc" if protocol == "grpc" else "http/protobuf")]
    return getattr(importlib.import_module(module), name)(**kwargs)


def otlp_span_exporter(protocol: str, *, fast: bool = True, **kwargs: Any) -> SpanExporter:
    """The OTLP span exporter for `grpc` or `http/protobuf`: the fast one, or the SDK's."""
    if not fast:
        return _sdk_exporter("traces", protocol, kwargs)  # type: ignore[no-any-return]
    return (_grpc_span_class() if protocol == "grpc" else _http_span_class())(**kwargs)


@functools.cache
def _http_log_class() -> type[LogRecordExporter]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    class EncodedOTLPHttpLogExporter(OTLPLogExporter):
        """The SDK's OTLP/HTTP log exporter, also sending pre-encoded batches."""

        def supports_encoded(self) -> bool:
            client = getattr(self, "_client", None)
            return (callable(getattr(client, "export", None)) and hasattr(self, "_metrics")
                    and hasattr(self, "_max_request_size"))

        def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
            if self._shutdown:
                return LogRecordExportResult.FAILURE
            sent = _http_send(self, payload, count, LogRecordExportResult.FAILURE)
            return LogRecordExportResult.SUCCESS if sent is True else LogRecordExportResult.FAILURE

    return EncodedOTLPHttpLogExporter


@functools.cache
def _grpc_log_class() -> type[LogRecordExporter]:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    class EncodedOTLPGrpcLogExporter(OTLPLogExporter):
        """The SDK's OTLP/gRPC log exporter, also sending pre-encoded batches as they are (with its retries)."""

        _initialize_channel_and_stub = _bytes_stub_installer(
            OTLPLogExporter, "/opentelemetry.proto.collector.logs.v1.LogsService/Export", ExportLogsServiceResponse)

        def supports_encoded(self) -> bool:
            return callable(getattr(self, "_export", None))

        def _translate_data(self, data: Any) -> Any:
            as_bytes = isinstance(getattr(self, "_client", None), _BytesStub)
            if isinstance(data, _Encoded):
                return data.payload if as_bytes else ExportLogsServiceRequest.FromString(data.payload)
            request = super()._translate_data(data)
            return request.SerializeToString() if as_bytes else request

        def _count_data(self, data: Any) -> int:
            return len(data)

        def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
            return self._export(_Encoded(payload, count))  # type: ignore[arg-type]

    return EncodedOTLPGrpcLogExporter


def otlp_log_exporter(protocol: str, *, fast: bool = True, **kwargs: Any) -> LogRecordExporter:
    """The OTLP log exporter for `grpc` or `http/protobuf`: one that also takes bytes, or the SDK's."""
    if not fast:
        return _sdk_exporter("logs", protocol, kwargs)  # type: ignore[no-any-return]
    return (_grpc_log_class() if protocol == "grpc" else _http_log_class())(**kwargs)


# --- metrics ------------------------------------------------------------------------------------------

def exporter_preferences(exporter: MetricExporter) -> dict[str, Any]:
    """The temporality and aggregation preferences a wrapper must repeat (None: the SDK's defaults)."""
    return {"preferred_temporality": getattr(exporter, "_preferred_temporality", None),
            "preferred_aggregation": getattr(exporter, "_preferred_aggregation", None)}


def metric_deferral(provider: Any) -> str | None:
    """Whether counter increments and histogram values may be kept in the facade until `provider`
    collects, and which ones may not.

    The SDK's sum (or histogram) of one label set is the same whether it gets `add(a)`, `add(b)` or
    `add(a + b)` within a collection interval; only exemplars see single measurements. "always_off":
    the provider keeps no exemplars, every update may wait. "trace_based" (the SDK's default): only
    updates made in a sampled span become exemplars, so those go to the SDK at once. None: not an SDK
    provider, or a filter that samples other measurements too; every update goes to the SDK at once.
    """
    if not isinstance(provider, MeterProvider):
        return None
    exemplar_filter = getattr(getattr(provider, "_sdk_config", None), "exemplar_filter", None)
    if type(exemplar_filter) is AlwaysOffExemplarFilter:
        return "always_off"
    if type(exemplar_filter) is TraceBasedExemplarFilter:
        return "trace_based"
    return None


class KeptValues:
    """Histogram values of one label set within one collection interval, kept as the SDK's explicit-bucket
    aggregation keeps them: a count per bucket, the sum (added in order), min and max."""

    __slots__ = ("boundaries", "counts", "high", "low", "total")

    def __init__(self, boundaries: tuple[float, ...], value: float) -> None:
        self.boundaries = boundaries
        self.counts = [0] * (len(boundaries) + 1)
        self.counts[bisect_left(boundaries, value)] = 1
        self.total = value
        self.low = self.high = value

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.boundaries, value)] += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)


class HistogramSink:
    """The SDK's histogram aggregations of one label set (one per reader and view), and `add`, which puts
    values kept in the facade into them as the SDK's `_ExplicitBucketHistogramAggregation.aggregate` would
    have, value by value: the same bucket counts, min and max, and the same sum as long as the
    aggregation's sum was 0 (nothing recorded directly in the interval; the facade sees to that)."""

    __slots__ = ("_aggregations", "_storages", "boundaries")

    _FIELDS = ("_lock", "_value", "_sum", "_min", "_max", "_record_min_max", "_boundaries", "_get_empty_bucket_counts")

    def __init__(self, aggregations: list[Any], storages: object, boundaries: tuple[float, ...]) -> None:
        self._aggregations = aggregations
        self._storages = storages
        self.boundaries = boundaries

    @classmethod
    def of(cls, provider: Any, instrument: Any, attributes: Mapping[str, Any] | None) -> HistogramSink | None:
        """The aggregations the SDK made for `attributes` when `instrument` first recorded them; None when
        they are not all plain explicit-bucket histograms with the same buckets (a view that filters keys
        or changes the aggregation, or internals that are not the ones this was written for): the SDK
        then keeps the label set."""
        try:
            from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
            from opentelemetry.sdk.metrics._internal.aggregation import _ExplicitBucketHistogramAggregation
        except ImportError:
            return None
        storages = getattr(getattr(provider, "_measurement_consumer", None), "_reader_storages", None)
        if not isinstance(storages, Mapping) or not storages:
            return None
        key = _hash_attributes(dict(attributes or {}))
        aggregations = []
        for storage in storages.values():
            matches = getattr(storage, "_instrument_view_instrument_matches", {}).get(instrument)
            if not matches:
                return None
            for match in matches:
                if getattr(getattr(match, "_view", None), "_attribute_keys", True) is not None:
                    return None
                aggregation = getattr(match, "_attributes_aggregation", {}).get(key)
                if type(aggregation) is not _ExplicitBucketHistogramAggregation or not all(
                        hasattr(aggregation, field) for field in cls._FIELDS):
                    return None
                aggregations.append(aggregation)
        boundaries = {tuple(a._boundaries) for a in aggregations}
        return cls(aggregations, storages, boundaries.pop()) if len(boundaries) == 1 else None

    def take_over(self) -> KeptValues | None:
        """What the aggregations hold for the current interval, moved into a `KeptValues` (they are left as
        a collection leaves them), so that the values that follow are added on in the SDK's order; None
        (and nothing moved) unless every aggregation holds the same."""
        aggregations = self._aggregations
        for aggregation in aggregations:
            aggregation._lock.acquire()
        try:
            states = {(None if a._value is None else tuple(a._value), a._sum, a._min, a._max) for a in aggregations}
            if len(states) != 1:
                return None
            counts, total, low, high = states.pop()
            if counts is None:
                return None
            kept = KeptValues(self.boundaries, total)
            kept.counts, kept.low, kept.high = list(counts), low, high
            for aggregation in aggregations:
                aggregation._value = None
                aggregation._sum = 0
                aggregation._min = math.inf
                aggregation._max = -math.inf
            return kept
        finally:
            for aggregation in aggregations:
                aggregation._lock.release()

    def current(self, provider: Any) -> bool:
        """False once the provider's readers changed (a reader added or removed)."""
        return getattr(getattr(provider, "_measurement_consumer", None), "_reader_storages", None) is self._storages

    def add(self, kept: KeptValues) -> None:
        for aggregation in self._aggregations:
            with aggregation._lock:
                if aggregation._value is None:
                    aggregation._value = aggregation._get_empty_bucket_counts()
                counts = aggregation._value
                for bucket, count in enumerate(kept.counts):
                    if count:
                        counts[bucket] += count
                aggregation._sum += kept.total
                if aggregation._record_min_max:
                    aggregation._min = min(aggregation._min, kept.low)
                    aggregation._max = max(aggregation._max, kept.high)


# --- spans: finished spans straight to the processors -----------------------------------------------------

#: Span processors whose `on_start` and `_on_ending` do nothing: a span they never saw start is the same to them.
_END_ONLY_PROCESSORS = (BatchSpanProcessor, SimpleSpanProcessor)


class FinishedSpanRoute:
    """What `Tracer.start_span` and `Span.end` use, for a span that is built as data and handed to the span
    processors only when it ends (`_deferred_spans.DeferredSpan`).

    Only for a plain SDK tracer: enabled, without the SDK's own tracer metrics, and whose processors are all
    batch or simple processors (their `on_start` does nothing); `open()` checks per span that this still
    holds (a processor added later sends spans back through `start_span`)."""

    __slots__ = ("_holder", "_processors", "limits", "scope", "tracer")

    def __init__(self, tracer: Tracer, holder: SynchronousMultiSpanProcessor, processors: tuple[Any, ...],
                 limits: SpanLimits, scope: Any) -> None:
        self.tracer = tracer
        self._holder = holder
        self._processors = processors
        self.limits = limits
        self.scope = scope

    @classmethod
    def of(cls, tracer: Any) -> FinishedSpanRoute | None:
        if type(tracer) is not Tracer or not hasattr(BoundedAttributes(), "_immutable"):
            return None
        holder = tracer.span_processor
        processors = getattr(holder, "_span_processors", None)
        limits = getattr(tracer, "_span_limits", None)
        scope = getattr(tracer, "_instrumentation_scope", None)
        if (type(holder) is not SynchronousMultiSpanProcessor or type(processors) is not tuple
                or not isinstance(limits, SpanLimits) or scope is None):
            return None
        if not all(type(p) in _END_ONLY_PROCESSORS for p in processors):
            return None
        route = cls(tracer, holder, processors, limits, scope)
        return route if route.open() else None

    def open(self) -> bool:
        tracer = self.tracer
        processors = self._holder._span_processors
        return (processors is self._processors
                and getattr(getattr(tracer, "_tracer_config", None), "is_enabled", False) is True
                and type(getattr(tracer, "_tracer_metrics", None)).__name__ == "NoOpTracerMetrics")

    def finish(self, span: ReadableSpan) -> None:
        """`Span.end`'s last step: every processor's `on_end`."""
        self._holder.on_end(span)


def freeze(attributes: BoundedAttributes) -> None:
    """What `Span.end` does to a span's attributes: no more changes."""
    attributes._immutable = True

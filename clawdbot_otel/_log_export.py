"""The facade's OTLP log path: a tuple on a bounded queue, OTLP protobuf bytes in a background batch.

`Telemetry.log` does not build an SDK `LogRecord` per call. When the logger provider's only
processor is a `QueuedLogRecordProcessor`, `EmitOTLP` appends one small tuple (`LogItem`) to the
processor's queue and returns; the caller never waits for an exporter, and a full queue drops the
record and says so (`clawdbot_otel_dropped_total{reason="log_queue_full"}`).

The processor's worker (or `force_flush`) turns a batch of tuples into one serialized
`ExportLogsServiceRequest` with a small hand-written protobuf encoder (`encode_items`): a few byte
joins per record instead of `ReadWriteLogRecord` + `BoundedAttributes` + `encode_logs`. Anything the
encoder does not handle plainly (a non-string body, nested attribute values, huge ints, attribute
limits set in the environment) goes through the SDK's own encoder for that record, so the bytes are
always what `encode_logs` would have produced for the same record (tests check this).

Exporters that accept encoded bytes implement `export_encoded(payload, count)`: the OTLP/HTTP,
OTLP/gRPC and file exporters that `setup()` builds (the subclasses below: the one place that uses
private parts of the pinned exporters, each with a fallback). Any other exporter (console,
in-memory, a user's) gets SDK `ReadableLogRecord`s converted from the tuples, through its public
`export()`. SDK records emitted by other code into the same provider (`on_emit`) share the queue.

Batching follows the OTEL_BLRP_* variables (queue size, batch size, schedule delay, export timeout)
with the SDK's defaults. `force_flush` and `shutdown` deliver everything queued before them; a forked
child starts with an empty queue and its own worker.
"""

from __future__ import annotations

import collections
import copy
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from opentelemetry._logs import LogRecord as APILogRecord
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import (
    Logger,
    LoggerProvider,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
)
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.environment_variables import (
    OTEL_BLRP_EXPORT_TIMEOUT,
    OTEL_BLRP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BLRP_MAX_QUEUE_SIZE,
    OTEL_BLRP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import TraceFlags

from ._otlp_wire import ONE_BYTE as _ONE_BYTE
from ._otlp_wire import any_value as _any_value
from ._otlp_wire import field as _field
from ._otlp_wire import headers as _headers
from ._otlp_wire import key_prefix as _key_prefix
from ._otlp_wire import pack_u32 as _pack_u32
from ._otlp_wire import pack_u64 as _pack_u64

__all__ = [
    "EncodedLogExporter",
    "LogItem",
    "QueuedLogRecordProcessor",
    "encode_items",
    "file_log_exporter",
    "item_to_sdk_record",
    "otlp_log_exporter",
    "queued_processor",
]

_log = logging.getLogger("clawdbot_otel.log_export")

LogItem = tuple[int, int, int, str, Any, dict[str, Any], int, int, int, Logger]
"""(time_ns, observed_time_ns, severity_number, severity_text, body, attributes, trace_id, span_id,
trace_flags, sdk_logger): what the caller's thread hands over. The logger gives the resource, the
instrumentation scope and the attribute limits, read when the batch is encoded."""


@runtime_checkable
class EncodedLogExporter(Protocol):
    """An exporter that sends an already serialized `ExportLogsServiceRequest`."""

    def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult: ...


# --- protobuf wire encoding (field numbers: opentelemetry/proto/logs/v1/logs.proto) -------------------

_SEVERITY_PREFIX: dict[tuple[int, str], bytes] = {}


def _severity(number: int, text: str) -> bytes:
    cached = _SEVERITY_PREFIX.get((number, text))
    if cached is None:
        if type(text) is not str or type(number) is not int or not 0 <= number < 128:
            raise TypeError(text)
        cached = (b"\x10" + _ONE_BYTE[number] if number else b"") + (_field(b"\x1a", text.encode()) if text else b"")
        if len(_SEVERITY_PREFIX) < 256:
            _SEVERITY_PREFIX[(number, text)] = cached
    return cached


def _encode_fast(item: LogItem) -> bytes:
    """One `LogRecord` message (without its tag) for the common case; raises on anything unusual."""
    ts, observed, sev_number, sev_text, body, attributes, trace_id, span_id, flags, _ = item
    parts = [b"\x09" + _pack_u64(ts) if ts else b"", _severity(sev_number, sev_text)]
    if type(body) is str:
        parts.append(_field(b"\x2a", _field(b"\x0a", body.encode())))
    else:
        parts.append(_field(b"\x2a", _any_value(body)) if body is not None else b"\x2a\x00")
    for key, value in attributes.items():
        value_bytes = _field(b"\x0a", value.encode()) if type(value) is str else _any_value(value)
        parts.append(_field(b"\x32", _field(_key_prefix(key), value_bytes)))
    if flags:
        parts.append(b"\x45" + _pack_u32(flags))
    if trace_id:
        parts.append(b"\x4a\x10" + trace_id.to_bytes(16, "big"))
    if span_id:
        parts.append(b"\x52\x08" + span_id.to_bytes(8, "big"))
    if observed:
        parts.append(b"\x59" + _pack_u64(observed))
    return b"".join(parts)


# Not empty, so that `LogRecord()` does not look up the current context (the ids are set after).
_NO_SPAN_CONTEXT = Context({"clawdbot_otel.log_export": True})


def item_to_sdk_record(item: LogItem) -> ReadableLogRecord:
    """The SDK record the same call would have produced through `Logger.emit` (limits applied)."""
    ts, observed, sev_number, sev_text, body, attributes, trace_id, span_id, flags, logger = item
    record = APILogRecord(
        timestamp=ts, observed_timestamp=observed, context=_NO_SPAN_CONTEXT, severity_text=sev_text,
        severity_number=SeverityNumber(sev_number), body=body, attributes=dict(attributes),
    )
    record.trace_id, record.span_id, record.trace_flags = trace_id, span_id, TraceFlags(flags)
    record.context = Context()
    writable = ReadWriteLogRecord(
        log_record=record, resource=logger.resource, instrumentation_scope=logger.instrumentation_scope,
        limits=logger._log_record_limits,
    )
    return ReadableLogRecord(
        log_record=writable.log_record, resource=logger.resource,
        instrumentation_scope=logger.instrumentation_scope, limits=writable.limits,
    )


def _encode_slow(item: LogItem) -> bytes:
    """One `LogRecord` message through the SDK's encoder: the exact semantics for unusual records."""
    from opentelemetry.exporter.otlp.proto.common._internal._log_encoder import _encode_log

    return bytes(_encode_log(item_to_sdk_record(item)).SerializeToString())


def _fast_ok(logger: Logger, attributes: int) -> bool:
    """The fast encoder is exact when no attribute limit bites (SDK defaults: 128 attributes, any length)."""
    limits = logger._log_record_limits
    most = limits.max_log_record_attributes
    return limits.max_log_record_attribute_length is None and (most is None or attributes <= most)


class _Group:
    __slots__ = ("records", "resource", "scope")

    def __init__(self, resource: Resource, scope: InstrumentationScope | None) -> None:
        self.resource = resource
        self.scope = scope
        self.records: list[bytes] = []


def encode_items(items: Iterable[LogItem]) -> tuple[bytes, int]:
    """A serialized `ExportLogsServiceRequest` for the items, and how many records it holds.

    Grouped by resource, then scope, in first-seen order (as `encode_logs` does). A record neither
    encoder can encode is left out (and logged), as the SDK's exporters drop a batch they cannot encode.
    """
    groups: dict[tuple[int, int], _Group] = {}
    resources: dict[int, list[_Group]] = {}
    count = 0
    for item in items:
        logger = item[9]
        resource, scope = logger.resource, logger.instrumentation_scope
        key = (id(resource), id(scope))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(resource, scope)
            resources.setdefault(id(resource), []).append(group)
        try:
            record = _encode_fast(item) if _fast_ok(logger, len(item[5])) else _encode_slow(item)
        except Exception:
            try:
                record = _encode_slow(item)
            except Exception as exc:
                _warn(f"a log record could not be encoded and was dropped: {exc!r}")
                continue
        group.records.append(_field(b"\x12", record))
        count += 1
    out: list[bytes] = []
    for scope_groups in resources.values():
        resource = scope_groups[0].resource
        resource_field = b""
        scope_parts: list[bytes] = []
        for group in scope_groups:
            resource_field, scope_field = _headers(resource, group.scope)
            scope_logs = scope_field + b"".join(group.records)
            schema = group.scope.schema_url if group.scope is not None else None
            if schema:
                scope_logs += _field(b"\x1a", schema.encode())
            scope_parts.append(_field(b"\x12", scope_logs))
        resource_logs = resource_field + b"".join(scope_parts)
        if resource.schema_url:
            resource_logs += _field(b"\x1a", resource.schema_url.encode())
        out.append(_field(b"\x0a", resource_logs))
    return b"".join(out), count


_last_warning = [0.0]


def _warn(message: str) -> None:
    """At most one warning per 20 s: an export failure must not flood the logs it travels with."""
    now = time.monotonic()
    if now - _last_warning[0] >= 20:
        _last_warning[0] = now
        _log.warning("clawdbot-otel log export: %s", message)


# --- the processor ----------------------------------------------------------------------------------

_DEFAULTS = {
    OTEL_BLRP_MAX_QUEUE_SIZE: 2048,
    OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: 512,
    OTEL_BLRP_SCHEDULE_DELAY: 1000,
    OTEL_BLRP_EXPORT_TIMEOUT: 30_000,
}


def _env_int(name: str, value: float | None) -> float:
    """An explicit argument, else the OTEL_BLRP_* variable, else the SDK's default (bad values: default)."""
    if value is not None:
        return value
    text = os.environ.get(name)
    if text:
        try:
            parsed = int(text)
            if parsed > 0:
                return parsed
        except ValueError:
            pass
        _log.warning("clawdbot-otel: %s=%r is not a positive integer; using %s", name, text, _DEFAULTS[name])
    return _DEFAULTS[name]


class QueuedLogRecordProcessor(LogRecordProcessor):
    """A batching processor whose queue takes `LogItem` tuples (the facade) and SDK records (others).

    Drop-in for `BatchLogRecordProcessor` (same OTEL_BLRP_* settings), plus `submit()` for the
    facade's tuples. `synchronous=True` exports each record on the caller's thread instead (tests).
    """

    def __init__(
        self,
        exporter: LogRecordExporter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
        export_timeout_millis: float | None = None,
        synchronous: bool = False,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = int(_env_int(OTEL_BLRP_MAX_QUEUE_SIZE, max_queue_size))
        self.max_export_batch_size = min(
            int(_env_int(OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, max_export_batch_size)), self.max_queue_size
        )
        self.schedule_delay = _env_int(OTEL_BLRP_SCHEDULE_DELAY, schedule_delay_millis) / 1000
        self.export_timeout = _env_int(OTEL_BLRP_EXPORT_TIMEOUT, export_timeout_millis) / 1000
        self.synchronous = synchronous
        self.dropped = 0
        """Records dropped because the queue was full (the caller also counts facade records)."""
        self.failed = 0
        """Records in batches the exporter did not accept."""
        self._send_encoded = _encoded_sender(exporter)
        self._queue: collections.deque[LogItem | ReadableLogRecord] = collections.deque()
        self._shutdown = False
        self._wake_pending = False
        self._export_lock = threading.Lock()
        self._exporting: int | None = None
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        if not synchronous:
            self._start_worker()
            if hasattr(os, "register_at_fork"):
                weak_reinit = weakref.WeakMethod(self._after_fork_in_child)

                def _after_in_child() -> None:
                    reinit = weak_reinit()
                    if reinit is not None:
                        reinit()

                os.register_at_fork(after_in_child=_after_in_child)

    # --- the caller's side -------------------------------------------------------------------------
    def submit(self, item: LogItem) -> bool:
        """Queue one record; False when the queue is full (the record is dropped). Never blocks."""
        queue = self._queue
        if len(queue) >= self.max_queue_size or self._shutdown:
            if self._shutdown:  # ignored after shutdown, as the SDK's processors do: not a full queue
                return True
            self.dropped += 1
            return False
        queue.append(item)
        if self.synchronous:
            self._export_all(None)
        elif len(queue) >= self.max_export_batch_size and not self._wake_pending:
            self._wake_pending = True
            self._wake.set()
        return True

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """An SDK record from another emitter of the same provider: queued like the facade's."""
        # a shallow copy without the context, as BatchLogRecordProcessor does
        copied = copy.copy(log_record.log_record)
        copied.context = Context()
        readable = ReadableLogRecord(
            log_record=copied, resource=log_record.resource or Resource.create({}),
            instrumentation_scope=log_record.instrumentation_scope, limits=log_record.limits,
        )
        queue = self._queue
        if self._shutdown:
            return
        if len(queue) >= self.max_queue_size:
            self.dropped += 1
            _warn("the log queue is full; records are being dropped")
            return
        queue.append(readable)
        if self.synchronous:
            self._export_all(None)
        elif len(queue) >= self.max_export_batch_size and not self._wake_pending:
            self._wake_pending = True
            self._wake.set()

    # --- the worker's side -------------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._run, name="ClawdbotOtelLogExport", daemon=True)
        self._worker.start()

    def _after_fork_in_child(self) -> None:
        # The parent exports what it had queued; the child starts empty, with its own lock and worker.
        self._queue.clear()
        self._export_lock = threading.Lock()
        self._exporting = None
        self._wake = threading.Event()
        self._wake_pending = False
        if not self._shutdown:
            self._start_worker()

    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while not self._shutdown:
                woken = self._wake.wait(self.schedule_delay)
                self._wake.clear()
                self._wake_pending = False
                if self._shutdown:
                    break
                self._export_batches(full_only=woken, deadline=None)
            self._export_batches(full_only=False, deadline=time.monotonic() + self.export_timeout)
        finally:
            detach(token)

    def _export_all(self, deadline: float | None) -> bool:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            return self._export_batches(full_only=False, deadline=deadline)
        finally:
            detach(token)

    def _export_batches(self, *, full_only: bool, deadline: float | None) -> bool:
        """Export queued records in batches; False if the deadline passed with records left."""
        me = threading.get_ident()
        if self._exporting == me:  # an exporter that logs: the loop below picks the new record up
            return True
        batch_size = self.max_export_batch_size
        queue = self._queue
        with self._export_lock:
            self._exporting = me
            # Draining takes what is queued now: records logged meanwhile (even by the exporter
            # itself) wait for the next round instead of keeping this one going.
            remaining = len(queue)
            try:
                while queue and (len(queue) >= batch_size if full_only else remaining > 0):
                    if deadline is not None and time.monotonic() > deadline:
                        return False
                    batch = []
                    popleft = queue.popleft
                    try:
                        for _ in range(min(batch_size, len(queue) if full_only else remaining)):
                            batch.append(popleft())
                    except IndexError:  # another thread emptied it (fork reinit)
                        pass
                    remaining -= len(batch)
                    self._export_batch(batch)
            finally:
                self._exporting = None
        return True

    def _export_batch(self, batch: Sequence[LogItem | ReadableLogRecord]) -> None:
        try:
            send = self._send_encoded
            if send is not None:
                items = [r for r in batch if isinstance(r, tuple)]
                payload, count = encode_items(items)
                if len(items) != len(batch):
                    others = [r for r in batch if not isinstance(r, tuple)]
                    # concatenated requests are one request: repeated fields merge
                    payload += encode_logs(others).SerializeToString()
                    count += len(others)
                result = send(payload, count)
            else:
                records = [item_to_sdk_record(r) if isinstance(r, tuple) else r for r in batch]
                result = self.exporter.export(records)
            if result is not LogRecordExportResult.SUCCESS:
                self.failed += len(batch)
        except Exception as exc:  # an exporter must never break the worker
            self.failed += len(batch)
            _warn(f"exporting {len(batch)} log records failed: {exc!r}")

    # --- flush and shutdown ------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued so far, on this thread; False if the timeout ran out first."""
        if self._shutdown:
            return False
        return self._export_all(time.monotonic() + timeout_millis / 1000)

    def shutdown(self) -> None:
        """Export what is queued (within the export timeout), stop the worker, shut the exporter down."""
        if self._shutdown:
            return
        self._shutdown = True
        worker = self._worker
        if worker is not None and worker.is_alive():
            self._wake.set()
            worker.join(self.export_timeout)
        else:
            self._export_all(time.monotonic() + self.export_timeout)
        try:
            self.exporter.shutdown()  # type: ignore[no-untyped-call]
        except Exception as exc:
            _warn(f"exporter shutdown failed: {exc!r}")


def queued_processor(provider: Any) -> tuple[QueuedLogRecordProcessor, Any, tuple[Any, ...]] | None:
    """`(processor, multi_processor, processors)` when an SDK provider's only processor is queued.

    The caller re-checks `multi._log_record_processors is processors` per record: a processor added
    later makes it fall back to `Logger.emit`, so that processor sees every record.
    """
    if not isinstance(provider, LoggerProvider):
        return None
    multi = getattr(provider, "_multi_log_record_processor", None)
    processors = getattr(multi, "_log_record_processors", None)
    if type(processors) is not tuple or len(processors) != 1:
        return None
    if not isinstance(processors[0], QueuedLogRecordProcessor):
        return None
    return processors[0], multi, processors


# --- exporters that take encoded bytes -----------------------------------------------------------------

def _encoded_sender(exporter: LogRecordExporter) -> Callable[[bytes, int], LogRecordExportResult] | None:
    if isinstance(exporter, EncodedLogExporter):
        send = exporter.export_encoded
        probe = getattr(exporter, "supports_encoded", None)
        if probe is None or probe():
            return send
    return None


class _Encoded:
    """A pre-encoded batch travelling through an exporter's own send path (gRPC retries)."""

    __slots__ = ("count", "payload")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count

    def __len__(self) -> int:
        return self.count


_SUCCESS = LogRecordExportResult.SUCCESS
_FAILURE = LogRecordExportResult.FAILURE


@functools.cache
def _http_exporter_class() -> type[LogRecordExporter]:
    from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

    class EncodedOTLPHttpLogExporter(OTLPLogExporter):
        """The SDK's OTLP/HTTP log exporter, also sending pre-encoded batches (pinned 1.45 internals)."""

        def supports_encoded(self) -> bool:
            client = getattr(self, "_client", None)
            return (callable(getattr(client, "export", None)) and hasattr(self, "_metrics")
                    and hasattr(self, "_max_request_size"))

        def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
            # OTLPLogExporter.export() after its encode step
            if self._shutdown:
                return _FAILURE
            with self._metrics.export_operation(count) as result:
                if _is_request_too_large(payload, self._max_request_size):
                    _warn(f"dropping a log batch of {len(payload)} bytes: over max_request_size")
                    result.error = RequestPayloadTooLargeError(f"{len(payload)} bytes")
                    return _FAILURE
                sent = self._client.export(payload)
                if not sent.success:
                    result.error = sent.error
                    result.error_attrs = (
                        {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None
                    )
                    return _FAILURE
            return _SUCCESS

    return EncodedOTLPHttpLogExporter


@functools.cache
def _grpc_exporter_class() -> type[LogRecordExporter]:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    class EncodedOTLPGrpcLogExporter(OTLPLogExporter):
        """The SDK's OTLP/gRPC log exporter, also sending pre-encoded batches (with its retries)."""

        def supports_encoded(self) -> bool:
            return callable(getattr(self, "_export", None))

        def _translate_data(self, data: Any) -> ExportLogsServiceRequest:
            if isinstance(data, _Encoded):
                return ExportLogsServiceRequest.FromString(data.payload)
            return super()._translate_data(data)

        def _count_data(self, data: Any) -> int:
            return len(data)

        def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
            return self._export(_Encoded(payload, count))  # type: ignore[arg-type]

    return EncodedOTLPGrpcLogExporter


@functools.cache
def _file_exporter_class() -> type[LogRecordExporter]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from ._file_export import FileLogExporter

    class EncodedFileLogExporter(FileLogExporter):
        """OTLP-JSON lines, from pre-encoded batches too (the same message, so the same line)."""

        def supports_encoded(self) -> bool:
            return callable(getattr(getattr(self, "_out", None), "write", None))

        def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult:
            ok = self._out.write(ExportLogsServiceRequest.FromString(payload))
            return _SUCCESS if ok else _FAILURE

    return EncodedFileLogExporter


def otlp_log_exporter(protocol: str, **kwargs: Any) -> LogRecordExporter:
    """The OTLP log exporter for `grpc` or `http/protobuf`, able to send pre-encoded batches."""
    cls = _grpc_exporter_class() if protocol == "grpc" else _http_exporter_class()
    return cls(**kwargs)


def file_log_exporter(path: Path) -> LogRecordExporter:
    """The OTLP-JSON lines file exporter, able to write pre-encoded batches."""
    return _file_exporter_class()(path)  # type: ignore[call-arg]

"""The facade's log records as OTLP protobuf bytes: `LogItem` tuples to one `ExportLogsServiceRequest`.

`Telemetry.log` does not build an SDK `LogRecord` per call: it queues a small tuple (`LogItem`, see
`_log_queue`), and the queue's worker turns a batch of them into one serialized request with a small
hand-written protobuf encoder (`encode_items`): a few byte joins per record instead of
`ReadWriteLogRecord` + `BoundedAttributes` + `encode_logs`. Anything the encoder does not handle
plainly (a non-string body, nested attribute values, huge ints, attribute limits that bite) goes
through the SDK's own public encoder for that record, so the bytes are always what `encode_logs` would
have produced for the same record (tests check this). `item_to_sdk_record` gives the SDK record the
same call would have produced through `Logger.emit`, for exporters that take records.

Part of the fast export path (CLAWDBOT_OTEL_FAST_EXPORT, see `_sdk_internals`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry._logs import LogRecord as APILogRecord
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import Logger, ReadableLogRecord, ReadWriteLogRecord
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
from ._sdk_internals import log_record_limits

__all__ = ["LogItem", "encode_items", "item_to_sdk_record", "warn_rarely"]

_log = logging.getLogger("clawdbot_otel.log_export")

LogItem = tuple[int, int, int, str, Any, dict[str, Any], int, int, int, Logger]
"""(time_ns, observed_time_ns, severity_number, severity_text, body, attributes, trace_id, span_id,
trace_flags, sdk_logger): what the caller's thread hands over. The logger gives the resource, the
instrumentation scope and the attribute limits, read when the batch is encoded."""


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
        limits=log_record_limits(logger),
    )
    return ReadableLogRecord(
        log_record=writable.log_record, resource=logger.resource,
        instrumentation_scope=logger.instrumentation_scope, limits=writable.limits,
    )


def _encode_slow(item: LogItem) -> bytes:
    """One `LogRecord` message through the SDK's public encoder: the exact semantics for unusual records."""
    request = encode_logs([item_to_sdk_record(item)])
    return bytes(request.resource_logs[0].scope_logs[0].log_records[0].SerializeToString())


def _fast_ok(logger: Logger, attributes: int) -> bool:
    """The fast encoder is exact when no attribute limit bites (SDK defaults: 128 attributes, any length)."""
    limits = log_record_limits(logger)
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
                warn_rarely(f"a log record could not be encoded and was dropped: {exc!r}")
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


def warn_rarely(message: str) -> None:
    """At most one warning per 20 s: an export failure must not flood the logs it travels with."""
    now = time.monotonic()
    if now - _last_warning[0] >= 20:
        _last_warning[0] = now
        _log.warning("clawdbot-otel log export: %s", message)

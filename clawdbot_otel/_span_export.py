"""OTLP span export without the SDK's per-attribute message building: spans to protobuf bytes directly.

The SDK's `encode_spans` builds a protobuf message object per span, attribute and value before
serializing (about 65 us for a session span with 20 attributes, on the exporter thread, holding the
GIL the host's event loop needs). `encode_spans_fast` writes the same `ExportTraceServiceRequest` bytes
with a few joins per field (`_otlp_wire`); a span with anything it does not handle plainly (a value
that is not a string, bool, int, float or a sequence of them) goes through the SDK's own encoder, so
the bytes always parse to what `encode_spans` builds (tests compare the two), down to the SDK leaving
out an attribute it cannot encode (an int beyond int64).

Only the SDK's public API is used here; the exporters that send these bytes, and the switch that
turns this path off (CLAWDBOT_OTEL_FAST_EXPORT=0), are in `_sdk_internals`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._otlp_wire import any_value, field, headers, key_prefix, pack_u32, pack_u64, varint

__all__ = ["encode_spans_fast"]

_log = logging.getLogger("clawdbot_otel.span_export")

# opentelemetry/proto/trace/v1/trace.proto: Span.flags bits the SDK sets from the parent context.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_SEQUENCES = (tuple, list)


def _value(value: Any) -> bytes:
    """AnyValue, with `array_value` for a sequence of plain values (the SDK keeps lists as tuples)."""
    if type(value) in _SEQUENCES:
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(v)) for v in value))
    return any_value(value)


# Encoded `KeyValue`s of short string attributes, by (tag, key, value): most repeat from span to span (the
# operation, the model, the tool, a status), so most attributes cost one lookup (about 20% of the encoding).
# Bounded: at most 8192 values of up to 128 characters, cleared when full.
_STRING_KEY_VALUES: dict[tuple[bytes, str, str], bytes] = {}
_CACHED_CHARS = 128


def _attributes(tag: bytes, attributes: Any) -> bytes:
    if not attributes:
        return b""
    out = []
    cache = _STRING_KEY_VALUES
    for key, value in attributes.items():
        if type(value) is str and len(value) <= _CACHED_CHARS:
            cached = cache.get((tag, key, value))
            if cached is None:
                if len(cache) >= 8192:
                    cache.clear()
                cached = cache[(tag, key, value)] = field(tag, field(key_prefix(key), field(b"\x0a", value.encode())))
            out.append(cached)
        else:
            out.append(field(tag, field(key_prefix(key), _value(value))))
    return b"".join(out)


def _flags(parent: Any) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return b"\x85\x01" + pack_u32(flags)  # field 16, fixed32


def _trace_state(state: Any) -> bytes:
    if not state:
        return b""
    return field(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items()).encode())


def _encode_span(span: ReadableSpan) -> bytes:
    """One `Span` message (without its tag); raises on anything the fast path does not cover."""
    ctx = span.get_span_context()
    if ctx is None:
        raise ValueError("span without a context")
    parent = span.parent
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
        _trace_state(ctx.trace_state),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent is not None else b"",
        field(b"\x2a", span.name.encode()) if span.name else b"",
        b"\x30" + varint(span.kind.value + 1),  # SDK SpanKind 0..4 is OTLP SPAN_KIND_INTERNAL..CONSUMER 1..5
        b"\x39" + pack_u64(span.start_time) if span.start_time else b"",
        b"\x41" + pack_u64(span.end_time) if span.end_time else b"",
        _attributes(b"\x4a", span.attributes),
        b"\x50" + varint(span.dropped_attributes) if span.dropped_attributes else b"",
    ]
    for event in span.events:
        parts.append(field(b"\x5a", b"".join((
            b"\x09" + pack_u64(event.timestamp) if event.timestamp else b"",
            field(b"\x12", event.name.encode()) if event.name else b"",
            _attributes(b"\x1a", event.attributes),
            b"\x20" + varint(event.dropped_attributes) if event.dropped_attributes else b"",
        ))))
    if span.dropped_events:
        parts.append(b"\x60" + varint(span.dropped_events))
    for link in span.links:
        lc = link.context
        parts.append(field(b"\x6a", b"".join((
            b"\x0a\x10" + lc.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + lc.span_id.to_bytes(8, "big"),  # no trace_state: the SDK's encoder leaves it out
            _attributes(b"\x22", link.attributes),
            b"\x28" + varint(link.dropped_attributes) if link.dropped_attributes else b"",
            b"\x35" + pack_u32(_HAS_IS_REMOTE | (_IS_REMOTE if lc.is_remote else 0)),
        ))))
    if span.dropped_links:
        parts.append(b"\x70" + varint(span.dropped_links))
    status = span.status
    message = status.description
    code = status.status_code.value
    # the SDK always sets the status message field, even when empty
    parts.append(field(b"\x7a", (field(b"\x12", message.encode()) if message else b"")
                       + (b"\x18" + varint(code) if code else b"")))
    parts.append(_flags(parent))
    return b"".join(parts)


def _encode_span_sdk(span: ReadableSpan) -> bytes:
    """The span's message as the SDK's public `encode_spans` builds it."""
    return bytes(encode_spans([span]).resource_spans[0].scope_spans[0].spans[0].SerializeToString())


def encode_spans_fast(spans: Sequence[ReadableSpan]) -> bytes:
    """A serialized `ExportTraceServiceRequest`: grouped by resource, then scope, in first-seen order
    (as `encode_spans` does)."""
    resources: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        try:
            encoded = _encode_span(span)
        except Exception:  # an unusual value: the SDK's encoder knows every case it can encode
            try:
                encoded = _encode_span_sdk(span)
            except Exception as exc:  # this span only, not the whole batch
                _log.warning("a span could not be encoded and was dropped: %r", exc)
                continue
        groups = resources.setdefault(id(resource), (resource, {}))[1]
        groups.setdefault(id(scope), (scope, []))[1].append(field(b"\x12", encoded))
    out = []
    for resource, groups in resources.values():
        resource_field = b""
        scope_parts = []
        for scope, encoded_spans in groups.values():
            resource_field, scope_field = headers(resource, scope)
            scope_spans = scope_field + b"".join(encoded_spans)
            if scope is not None and scope.schema_url:
                scope_spans += field(b"\x1a", scope.schema_url.encode())
            scope_parts.append(field(b"\x12", scope_spans))
        resource_spans = resource_field + b"".join(scope_parts)
        if resource.schema_url:
            resource_spans += field(b"\x1a", resource.schema_url.encode())
        out.append(field(b"\x0a", resource_spans))
    return b"".join(out)

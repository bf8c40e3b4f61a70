"""OTLP protobuf wire encoding shared by the log and span exporters: a few byte joins per field.

Fields are written in field-number order and default (zero) scalars are left out, as the protobuf
runtime does, so the bytes parse to the message the SDK's encoders build (the tests compare them).
Only the SDK's public API is used here; the fast path's switch is in `_sdk_internals`.
"""

from __future__ import annotations

import struct
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

__all__ = ["ONE_BYTE", "any_value", "field", "headers", "key_prefix", "pack_f64", "pack_u32", "pack_u64", "varint"]


pack_u64 = struct.Struct("<Q").pack
pack_u32 = struct.Struct("<I").pack
pack_f64 = struct.Struct("<d").pack
ONE_BYTE = tuple(bytes((i,)) for i in range(128))
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def varint(n: int) -> bytes:
    if n < 128:
        return ONE_BYTE[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (ONE_BYTE[n] if n < 128 else varint(n)) + payload


def any_value(value: Any) -> bytes:
    """AnyValue for str/bool/int/float; anything else raises (the record then takes the SDK path)."""
    kind = type(value)
    if kind is str:
        return field(b"\x0a", value.encode())
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if value < 0:
            if value < _INT64_MIN:
                raise OverflowError(value)
            value += 1 << 64
        elif value > _INT64_MAX:
            raise OverflowError(value)
        return b"\x18" + varint(value)
    if kind is float:
        return b"\x21" + pack_f64(value)
    raise TypeError(kind)


_KEY_PREFIX: dict[str, bytes] = {}


def key_prefix(key: str) -> bytes:
    """`KeyValue.key` field plus the `value` tag, cached (keys repeat: component, request_id, ...)."""
    prefix = _KEY_PREFIX.get(key)
    if prefix is None:
        if type(key) is not str or not key:
            raise TypeError(key)
        if len(_KEY_PREFIX) >= 4096:
            _KEY_PREFIX.clear()
        prefix = _KEY_PREFIX[key] = field(b"\x0a", key.encode()) + b"\x12"
    return prefix


_HEADER_CACHE: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, bytes, bytes]] = {}
_PROBE_CONTEXT = SpanContext(1, 1, False)


def headers(resource: Resource, scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
    """The serialized `resource` field (field 1 of ResourceLogs/ResourceSpans) and `scope` field (field 1
    of ScopeLogs/ScopeSpans), cached per object pair.

    Taken from what the SDK's public `encode_spans` makes of an empty span with this resource and
    scope: the log and span encoders encode both the same way."""
    key = (id(resource), id(scope))
    cached = _HEADER_CACHE.get(key)
    if cached is not None and cached[0] is resource and cached[1] is scope:
        return cached[2], cached[3]
    probe = ReadableSpan(name="", context=_PROBE_CONTEXT, resource=resource, instrumentation_scope=scope)
    resource_spans = encode_spans([probe]).resource_spans[0]
    resource_field = field(b"\x0a", resource_spans.resource.SerializeToString())
    scope_field = field(b"\x0a", resource_spans.scope_spans[0].scope.SerializeToString())
    if len(_HEADER_CACHE) >= 64:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[key] = (resource, scope, resource_field, scope_field)
    return resource_field, scope_field

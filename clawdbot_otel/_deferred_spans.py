"""Spans that exist only as data until they end: the fast path for every span the facade starts.

The SDK's `start_span` builds a live `Span` (a lock, bounded attributes, the processors' `on_start`) that
the caller then only holds: nothing reads a running span but its context. A `DeferredSpan`
keeps what `start_span` was given, gives children its context at once, applies the setters as the SDK's
span would (bounded attributes and events, created at the first change), and at `end` builds the finished
span the SDK would have built (the same attributes, events, status, times, resource and scope) and hands it
to the span processors; `discard` forgets it (a request the tracing policy leaves untraced).

On the fast export path only (CLAWDBOT_OTEL_FAST_EXPORT, see `_sdk_internals`) and only for a plain SDK
tracer (`FinishedSpanRoute`); otherwise `start_span` runs. tests/core/test_deferred_spans.py checks that
both give the same exported spans.
"""

from __future__ import annotations

import traceback
import weakref
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

from ._sdk_internals import FinishedSpanRoute, fast_export_enabled, freeze

__all__ = ["DeferredSpan", "start_deferred"]

_ROUTES: weakref.WeakKeyDictionary[Any, FinishedSpanRoute | None] = weakref.WeakKeyDictionary()


def _route(tracer: Any) -> FinishedSpanRoute | None:
    try:
        route = _ROUTES[tracer]
    except KeyError:
        route = _ROUTES[tracer] = FinishedSpanRoute.of(tracer) if fast_export_enabled() else None
    except TypeError:  # not weakly referable: not the SDK's tracer
        return None
    return route if route is not None and route.open() else None


def start_deferred(tracer: Any, *, name: str, context: otel_context.Context | None, kind: SpanKind,
                   attributes: Mapping[str, Any], start_time: int | None,
                   ids: tuple[int, int] | None) -> trace.Span | None:
    """What `tracer.start_span` would return (with `ids` as `PresetIds` would give them), as a
    `DeferredSpan`; None when the fast path is off or `tracer` is not a plain SDK tracer."""
    route = _route(tracer)
    if route is None:
        return None
    sdk_tracer = route.tracer
    parent: SpanContext | None = trace.get_current_span(context).get_span_context()
    generator = sdk_tracer.id_generator
    if parent is None or not parent.is_valid:
        parent = None
        trace_id = ids[0] if ids is not None else generator.generate_trace_id()
    else:
        trace_id = parent.trace_id
    sampling = sdk_tracer.sampler.should_sample(context, trace_id, name, kind, attributes, ())
    flags = TraceFlags.SAMPLED if sampling.decision is Decision.RECORD_AND_SAMPLE else TraceFlags.DEFAULT
    if parent is None:
        random_trace_id = ids is not None or generator.is_trace_id_random()
    else:
        random_trace_id = parent.trace_flags.random_trace_id
    if random_trace_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    span_id = ids[1] if ids is not None else generator.generate_span_id()
    span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags),
                               trace_state=sampling.trace_state)
    if sampling.decision is Decision.DROP:
        return trace.NonRecordingSpan(span_context)
    return DeferredSpan(route, name=name, context=span_context, parent=parent, kind=kind,
                        attributes=sampling.attributes, start_time=start_time if start_time is not None else time_ns())


def _frozen(maxlen: int | None, attributes: types.Attributes, limits: SpanLimits) -> BoundedAttributes:
    """An event's or a link's attributes, as the SDK's span bounds them."""
    return BoundedAttributes(maxlen, attributes, max_value_len=limits.max_attribute_length, immutable=True)


class DeferredSpan(trace.Span):
    """A recording span kept as data until `end` (see the module docstring)."""

    __slots__ = ("_attributes", "_bounded", "_context", "_end_time", "_events", "_kind", "_links", "_name",
                 "_parent", "_resource", "_route", "_status", "start_time")

    def __init__(self, route: FinishedSpanRoute, *, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: types.Attributes, start_time: int) -> None:
        self._route = route
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._resource = route.tracer.resource
        self._bounded: BoundedAttributes | None = None  # the SDK span's attributes, from the first set on
        self._events: BoundedList[Event] | None = None
        self._links: BoundedList[trace.Link] | None = None
        self._status = Status(StatusCode.UNSET)
        self._end_time: int | None = None
        self.start_time = start_time

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is None:
            self._attributes_now()[key] = value

    def _attributes_now(self) -> BoundedAttributes:
        """What the SDK's span holds from its start: set in place, so a long-lived span stays bounded."""
        bounded = self._bounded
        if bounded is None:
            limits = self._route.limits
            bounded = self._bounded = BoundedAttributes(limits.max_span_attributes, self._attributes,
                                                        immutable=False,
                                                        max_value_len=limits.max_span_attribute_length)
        return bounded

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # the SDK's rules: OK is final, UNSET is never set
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        limits = self._route.limits
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        self._events.append(Event(name=name, attributes=_frozen(limits.max_event_attributes, attributes, limits),
                                  timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        # links given to start_span go the SDK's way (the sampler sees them); these come later, as the SDK's
        # span takes them: host code or an instrumentation may link the current span
        if self._end_time is not None or not (context and (context.is_valid or attributes or context.trace_state)):
            return
        limits = self._route.limits
        if self._links is None:
            self._links = BoundedList(limits.max_links)
        self._links.append(trace.Link(context, _frozen(limits.max_link_attributes, attributes, limits)))

    def record_exception(self, exception: BaseException, attributes: types.Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, types.AnyValue] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time_ns()
        route = self._route
        limits = route.limits
        attributes = self._attributes_now()
        freeze(attributes)
        events = self._events if self._events is not None else BoundedList(limits.max_events)
        route.finish(ReadableSpan(
            name=self._name, context=self._context, parent=self._parent, resource=self._resource,
            attributes=attributes, events=events,
            links=self._links if self._links is not None else BoundedList(limits.max_links), kind=self._kind,
            status=self._status, start_time=self.start_time, end_time=self._end_time,
            instrumentation_info=route.tracer.instrumentation_info, instrumentation_scope=route.scope,
        ))

    def discard(self) -> None:
        """Never export this span (it ends without reaching the processors)."""
        self._end_time = self._end_time or time_ns()



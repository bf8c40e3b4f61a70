"""Spans by category: a scope that is a context manager, an async context manager and a decorator.

The scope validates attribute keys against the category (strict: raise; production: drop and count),
adds the category and the baggage `correlation_id`, and marks errors: an exception leaving the scope
sets status ERROR, `error.type` and an exception event.
"""

from __future__ import annotations

import functools
import inspect
import string
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage import get_baggage
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._context import CORRELATION_BAGGAGE_KEY
from ._deferred_spans import DeferredSpan, start_deferred
from ._redact import Redactor
from .conventions import (
    COMMON_ATTRIBUTES,
    CORRELATION_ATTRIBUTE,
    SPAN_CATEGORIES,
    SPAN_CATEGORY_ATTRIBUTE,
    SpanCategory,
    nearest,
)

__all__ = ["PresetIds", "SpanHandle", "SpanOwner", "SpanScope", "TracingMixin", "model_family", "session_type"]

F = TypeVar("F", bound=Callable[..., Any])


class SpanOwner(Protocol):
    """What the span helpers need from the object they are mixed into (the `Telemetry` facade): its
    tracer, the content settings, and where a rejected name or attribute is reported."""

    tracer: trace.Tracer
    capture_content: bool
    redactor: Redactor

    def _reject(self, reason: str, metric: str, message: str) -> None: ...

_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "internal": SpanKind.INTERNAL,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_COMMON_KEYS = frozenset(a.key for a in COMMON_ATTRIBUTES)
_PROPAGATOR = TraceContextTextMapPropagator()


class _Category:
    __slots__ = ("allowed", "kind", "name_parts", "spec")

    def __init__(self, spec: SpanCategory) -> None:
        self.spec = spec
        self.kind = _KINDS[spec.span_kind]
        self.allowed = spec.attribute_keys | _COMMON_KEYS
        # The span-name template is parsed once: values from frames (a tool named "{x}") are then
        # only ever joined in, never parsed as a template themselves.
        self.name_parts = tuple(
            (literal, key) for literal, key, _format, _conversion in string.Formatter().parse(spec.span_name)
        )

    def span_name(self, attributes: Mapping[str, Any]) -> str:
        out = []
        for literal, key in self.name_parts:
            out.append(literal)
            if key:
                value = attributes.get(key)
                if value is not None:
                    out.append(str(value))
        return "".join(out).strip()


_CATEGORIES = {c.name: _Category(c) for c in SPAN_CATEGORIES}


def model_family(model: str | None) -> str:
    """The design's model family of a real model id: `claude-opus-4-5` -> opus; unknown -> other."""
    if model:
        lowered = model.lower()
        for family in ("opus", "sonnet", "haiku"):
            if family in lowered:
                return family
    return "other"


def session_type(session_key: str | None) -> str:
    """main, cron or subagent from an OpenClaw session key (`agent:<id>:subagent:<uuid>`, `cron:<job>`)."""
    if not session_key:
        return "other"
    parts = session_key.split(":")
    if parts[0] == "cron" or "cron" in parts[2:3]:
        return "cron"
    if "subagent" in parts:
        return "subagent"
    if parts[0] == "agent":
        return "main"
    return "other"


_PRIMITIVES = (str, bool, int, float)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _attribute_problem(value: Any) -> str | None:
    """Why `value` is not an OTel attribute value (the SDK would keep bytes and ints beyond 64 bits, which
    then break the console exporter and OTLP encoding of the whole batch), or None."""
    kind = type(value)
    if kind is str or kind is float or kind is bool:
        return None
    if kind is int:
        return None if _INT64_MIN <= value <= _INT64_MAX else "an integer beyond 64 bits"
    if isinstance(value, list | tuple):
        kinds = {type(v) for v in value if v is not None}
        if len(kinds) > 1 or not kinds <= {str, bool, int, float}:
            return "a list of mixed or non-primitive values"
        if int in kinds and not all(v is None or _INT64_MIN <= v <= _INT64_MAX for v in value):
            return "a list with an integer beyond 64 bits"
        return None
    return f"a {kind.__name__}"


def _invalid_value_message(category: _Category, key: str, problem: str) -> str:
    return (f"span category {category.spec.name}: attribute {key} is {problem}; use a str, bool, int, float "
            "or a list of one of them")


class SpanHandle:
    """The running span, with category-checked attribute setters and the design's status words."""

    __slots__ = ("_category", "_owner", "span")

    def __init__(self, span: trace.Span, category: _Category, owner: SpanOwner) -> None:
        self.span = span
        self._category = category
        self._owner = owner

    def set(self, key: str, value: Any) -> SpanHandle:
        if value is None:
            return self
        if key not in self._category.allowed:
            self._owner._reject(
                "unknown_attribute", f"span:{self._category.spec.name}",
                _unknown_attribute_message(self._category, key),
            )
            return self
        problem = _attribute_problem(value)
        if problem is not None:
            self._owner._reject("invalid_attribute_value", f"span:{self._category.spec.name}",
                                _invalid_value_message(self._category, key, problem))
            return self
        self.span.set_attribute(key, value)
        return self

    def update(self, attributes: Mapping[str, Any] | None = None, **kwargs: Any) -> SpanHandle:
        for key, value in {**(attributes or {}), **kwargs}.items():
            self.set(key, value)
        return self

    def set_status(self, status: str, description: str | None = None, error_type: str | None = None) -> None:
        """success, failure or timeout; failure and timeout mark the span ERROR."""
        self.span.set_attribute("clawdbot.status", status)
        if status == "success":
            self.span.set_status(Status(StatusCode.OK))
        else:
            self.span.set_status(Status(StatusCode.ERROR, description))
            self.span.set_attribute("error.type", error_type or status)

    def record_error(self, error: BaseException | str, error_type: str | None = None) -> None:
        if isinstance(error, BaseException):
            self.span.record_exception(error)
            self.set_status("failure", f"{type(error).__name__}: {error}", error_type or type(error).__name__)
        else:
            self.set_status("failure", error, error_type or "error")

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        return format(self.span.get_span_context().span_id, "016x")

    @property
    def traceparent(self) -> str:
        """The W3C traceparent of this span, for frames and headers of outgoing calls."""
        ctx = self.span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    @property
    def context(self) -> otel_context.Context:
        return trace.set_span_in_context(self.span)

    def end(self, end_time: int | None = None) -> None:
        self.span.end(end_time)

    def discard(self) -> None:
        """Never export this span: a deferred span (see `SpanScope.start`) is forgotten; a span the SDK
        started is left without an end, which the SDK never exports."""
        if isinstance(self.span, DeferredSpan):
            self.span.discard()


def _unknown_attribute_message(category: _Category, key: str) -> str:
    close = nearest(key, sorted(category.allowed))
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"span category {category.spec.name} has no attribute {key!r}{hint}"


class PresetIds(IdGenerator):
    """A tracer's id generator that hands out given ids to the next span a thread starts with `preset`.

    For spans whose ids were chosen before the span exists: the gateway's relay puts a request's
    `traceparent` on the frame it sends upstream and the observer (perhaps in another process) then
    starts that request's span with the same ids. The trace id is used when the span has no valid
    parent (with one, the parent's trace id is the span's, as the relay also chose it)."""

    __slots__ = ("_inner", "_preset")

    def __init__(self, inner: IdGenerator) -> None:
        self._inner = inner
        self._preset: dict[int, list[int]] = {}  # thread id -> [trace id, span id], 0 once used

    @classmethod
    def of(cls, tracer: Any) -> PresetIds | None:
        """The tracer's preset generator, installed over its own on first use (None: not an SDK tracer)."""
        current = getattr(tracer, "id_generator", None)
        if isinstance(current, PresetIds):
            return current
        if not isinstance(current, IdGenerator):
            return None
        tracer.id_generator = preset = cls(current)
        return preset

    def preset(self, trace_id: int, span_id: int) -> None:
        self._preset[threading.get_ident()] = [trace_id, span_id]

    def clear(self) -> None:
        self._preset.pop(threading.get_ident(), None)

    def generate_trace_id(self) -> int:
        ids = self._preset.get(threading.get_ident())
        if ids is not None and ids[0]:
            trace_id, ids[0] = ids[0], 0
            return trace_id
        return self._inner.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = self._preset.get(threading.get_ident())
        if ids is not None and ids[1]:
            span_id, ids[1] = ids[1], 0
            return span_id
        return self._inner.generate_span_id()

    def is_trace_id_random(self) -> bool:
        # asked after generate_trace_id(), only for a root span: a preset one is random (the relay's)
        return threading.get_ident() in self._preset or self._inner.is_trace_id_random()


def parent_context(parent: Any) -> otel_context.Context | None:
    """A parent given as a Context, a SpanHandle, a Span or a W3C `traceparent` string."""
    if parent is None or isinstance(parent, otel_context.Context):
        return parent
    if isinstance(parent, SpanHandle):
        return parent.context
    if isinstance(parent, trace.Span):
        return trace.set_span_in_context(parent)
    if isinstance(parent, str):
        ctx = _PROPAGATOR.extract({"traceparent": parent})
        return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None
    raise TypeError(f"parent must be a Context, SpanHandle, Span or traceparent string, not {type(parent).__name__}")


class SpanScope:
    """A span that starts on entering and ends on leaving; also a decorator (one span per call)."""

    __slots__ = ("_args", "_handle", "_owner", "_token")

    def __init__(self, owner: SpanOwner, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args
        self._handle: SpanHandle | None = None
        self._token: object | None = None

    def start(self) -> SpanHandle:
        """Start without making it current (for spans that end elsewhere, e.g. a frame observer). On the
        fast export path the span exists only as data until it ends, and `SpanHandle.discard` can still
        drop it (see `_deferred_spans`); the exported span is the one the SDK's `start_span` gives."""
        category, name, ctx, kind, attrs, start_time, links, ids = self._prepare()
        owner = self._owner
        span = None if links else start_deferred(owner.tracer, name=name, context=ctx, kind=kind,
                                                 attributes=attrs, start_time=start_time, ids=ids)
        if span is None:
            preset = PresetIds.of(owner.tracer) if ids is not None else None
            if preset is not None and ids is not None:
                preset.preset(*ids)
            try:
                span = owner.tracer.start_span(name, context=ctx, kind=kind, attributes=attrs, links=links,
                                               start_time=start_time)
            finally:
                if preset is not None:
                    preset.clear()
        self._handle = SpanHandle(span, category, owner)
        return self._handle

    def _prepare(self) -> tuple[_Category, str, otel_context.Context | None, SpanKind, dict[str, Any],
                                int | None, list[Link] | None, tuple[int, int] | None]:
        """The checked attributes, the parent context, the name and kind of the span to start."""
        category, name, attributes, parent, start_time, links, kind, ids = self._args
        owner = self._owner
        attrs = {SPAN_CATEGORY_ATTRIBUTE: category.spec.name}
        if attributes:
            allowed = category.allowed
            for key, value in attributes.items():
                if value is None:
                    continue
                if key not in allowed:
                    owner._reject("unknown_attribute", f"span:{category.spec.name}",
                                  _unknown_attribute_message(category, key))
                elif (problem := _attribute_problem(value)) is not None:
                    owner._reject("invalid_attribute_value", f"span:{category.spec.name}",
                                  _invalid_value_message(category, key, problem))
                else:
                    attrs[key] = value
        try:
            ctx = parent_context(parent)
        except TypeError as exc:
            owner._reject("invalid_parent", f"span:{category.spec.name}", str(exc))
            ctx = None
        cid = get_baggage(CORRELATION_BAGGAGE_KEY, ctx)
        if cid is not None:
            attrs.setdefault(CORRELATION_ATTRIBUTE, cid)
        return (category, name or category.span_name(attrs), ctx, kind or category.kind, attrs, start_time, links,
                ids)

    def __enter__(self) -> SpanHandle:
        handle = self.start()
        self._token = otel_context.attach(trace.set_span_in_context(handle.span))
        return handle

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> None:
        handle = self._handle
        assert handle is not None
        try:
            if exc is not None:
                handle.record_error(exc)
            handle.span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]

    async def __aenter__(self) -> SpanHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        owner, args = self._owner, self._args
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*a: Any, **kw: Any) -> Any:
                with SpanScope(owner, args):
                    return await fn(*a, **kw)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            with SpanScope(owner, args):
                return fn(*a, **kw)

        return cast(F, wrapper)


class TracingMixin:
    """`start_span` and the typed helpers for each span category (mixed into `Telemetry`)."""

    def _start_span(
        self,
        category: str,
        name: str | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
        parent: Any = None,
        start_time: int | None = None,
        links: list[Link] | None = None,
        kind: SpanKind | None = None,
        ids: tuple[int, int] | None = None,
    ) -> SpanScope:
        owner = cast("SpanOwner", self)
        spec = _CATEGORIES.get(category)
        if spec is None:
            close = nearest(category, list(_CATEGORIES))
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            message = f"unknown span category {category!r}{hint} (categories: {', '.join(_CATEGORIES)})"
            owner._reject("unknown_span_category", "span", message)
            # Production keeps the operation (children still need a parent) under category `other`.
            literal = str(category).replace("{", "{{").replace("}", "}}")  # a name, not a template
            spec = _Category(SpanCategory("other", "", literal, "internal", ()))
        return SpanScope(owner, (spec, name, attributes, parent, start_time, links, kind, ids))

    def _content(self, value: Any) -> str | None:
        owner = cast("SpanOwner", self)
        if not owner.capture_content or value is None:
            return None
        text = value if isinstance(value, str) else _json(owner.redactor.value(value))
        return owner.redactor.text(text)

    # --- typed helpers, one per category ----------------------------------------------------
    def request_span(
        self, method: str, *, request_id: str | None = None, body: Any = None, body_bytes: int | None = None,
        headers: Mapping[str, str] | None = None, connection_id: str | None = None,
        client_id: str | None = None, parent: Any = None, start_time: int | None = None,
        ids: tuple[int, int] | None = None,
    ) -> SpanScope:
        """`ids`: (trace id, span id) chosen beforehand (see `PresetIds`); the trace id counts when
        `parent` is not a valid span context."""
        owner = cast("SpanOwner", self)
        summary = self._content(body) if body is not None else None
        if summary is None and isinstance(body, Mapping):
            summary = "keys: " + ",".join(sorted(str(k) for k in body)[:20])
        return self._start_span("request", attributes={
            "rpc.system": "clawdbot.gateway",
            "rpc.method": method,
            "clawdbot.request.method": method,
            "clawdbot.request.id": request_id,
            "clawdbot.request.body_summary": summary,
            "clawdbot.request.body_bytes": body_bytes,
            "clawdbot.request.headers": _json(owner.redactor.mapping(headers)) if headers else None,
            "clawdbot.connection.id": connection_id,
            "clawdbot.client.id": client_id,
        }, parent=parent, start_time=start_time, ids=ids)

    def session_span(
        self, agent_name: str, *, model: str | None = None, provider: str | None = None,
        session_key: str | None = None, agent_id: str | None = None, run_id: str | None = None,
        parent: Any = None, start_time: int | None = None,
    ) -> SpanScope:
        return self._start_span("session", attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent_name,
            "gen_ai.agent.id": agent_id or agent_name,
            "gen_ai.conversation.id": session_key,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "clawdbot.session.key": session_key,
            "clawdbot.session.type": session_type(session_key) if session_key else None,
            "clawdbot.session.model": model_family(model) if model else None,
            "clawdbot.session.run_id": run_id,
        }, parent=parent, start_time=start_time)

    def model_call_span(
        self, model: str, *, provider: str | None = None, parent: Any = None, start_time: int | None = None,
    ) -> SpanScope:
        return self._start_span("model_call", attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.provider.name": provider,
            "clawdbot.session.model": model_family(model),
        }, parent=parent, start_time=start_time)

    def tool_call_span(
        self, tool_name: str, *, call_id: str | None = None, params: Any = None, parent: Any = None,
        start_time: int | None = None,
    ) -> SpanScope:
        return self._start_span("tool_call", attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.arguments": self._content(params),
            "clawdbot.tool.params_bytes": len(_json(params)) if params is not None else None,
        }, parent=parent, start_time=start_time)

    def spawn_span(
        self, label: str, *, model: str | None = None, task: str | None = None, request_id: str | None = None,
        requested_by: str | None = None, parent: Any = None, start_time: int | None = None,
    ) -> SpanScope:
        summary = task.strip().splitlines()[0][:120] if task and task.strip() else None
        return self._start_span("spawn", attributes={
            "gen_ai.operation.name": "create_agent",
            "gen_ai.request.model": model,
            "clawdbot.spawn.label": label,
            "clawdbot.spawn.model": model_family(model) if model else None,
            "clawdbot.spawn.task_summary": cast("SpanOwner", self).redactor.text(summary) if summary else None,
            "clawdbot.spawn.request_id": request_id,
            "clawdbot.spawn.requested_by": requested_by,
        }, parent=parent, start_time=start_time)

    def message_span(
        self, from_agent: str, to_agent: str, message_type: str, *, operation: str = "send",
        message_id: str | None = None, parent: Any = None, start_time: int | None = None,
    ) -> SpanScope:
        op_type = {"send": "send", "deliver": "receive", "archive": "settle"}.get(operation, operation)
        return self._start_span("message", attributes={
            "messaging.system": "clawdbot.inbox",
            "messaging.operation.name": operation,
            "messaging.operation.type": op_type,
            "messaging.destination.name": to_agent,
            "messaging.message.id": message_id,
            "clawdbot.message.from": from_agent,
            "clawdbot.message.to": to_agent,
            "clawdbot.message.type": message_type,
        }, parent=parent, start_time=start_time, kind=SpanKind.PRODUCER if operation == "send" else SpanKind.CONSUMER)

    def validation_span(
        self, layer: str, *, task_id: str | None = None, parent: Any = None, start_time: int | None = None,
    ) -> SpanScope:
        return self._start_span("validation", attributes={
            "clawdbot.validation.layer": layer,
            "clawdbot.task.id": task_id,
        }, parent=parent, start_time=start_time)

    def job_span(
        self, job_name: str, *, job_id: str | None = None, trigger: str = "schedule", parent: Any = None,
        start_time: int | None = None,
    ) -> SpanScope:
        return self._start_span("job", attributes={
            "clawdbot.job.name": job_name,
            "clawdbot.job.id": job_id,
            "clawdbot.job.trigger": trigger,
        }, parent=parent, start_time=start_time)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()

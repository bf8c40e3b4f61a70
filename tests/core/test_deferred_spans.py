"""CLAWDBOT_OTEL_FAST_EXPORT and spans: deferred (`SpanScope.start` on the fast path: built as data and handed
to the processors finished) or started by the SDK's `start_span`, the exported spans are the same.

Two captures run the same spans, one with the switch on and one with it off; every field of every exported
span must be equal: name, ids, flags, trace state, parent, kind, start and end times, attributes (order,
truncation, dropped count), events, links, status, resource and scope. Children started on a deferred span
must be the same children too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import TraceFlags

from clawdbot_otel import SpanHandle, Telemetry, _deferred_spans
from clawdbot_otel._deferred_spans import DeferredSpan
from clawdbot_otel._sdk_internals import FAST_EXPORT_ENV
from clawdbot_otel.testing import Capture, capture_telemetry

T0 = 1_700_000_000_000_000_000
CLIENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SAMPLED_PARENT = f"00-{CLIENT_TRACE:032x}-00f067aa0ba902b7-01"
RANDOM_PARENT = f"00-{CLIENT_TRACE:032x}-00f067aa0ba902b7-03"
UNSAMPLED_PARENT = f"00-{CLIENT_TRACE:032x}-00f067aa0ba902b7-00"


def _fields(span: ReadableSpan) -> tuple[Any, ...]:
    ctx, parent = span.context, span.parent
    assert ctx is not None
    attributes = span.attributes or {}
    return (
        span.name, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.trace_state.to_header(), ctx.is_remote,
        None if parent is None else (parent.trace_id, parent.span_id, int(parent.trace_flags), parent.is_remote),
        span.kind, span.start_time, span.end_time, list(attributes.items()), span.dropped_attributes,
        [(e.name, list((e.attributes or {}).items()), e.timestamp) for e in span.events], span.dropped_events,
        [(link.context, dict(link.attributes or {})) for link in span.links], span.dropped_links,
        span.status.status_code, span.status.description, span.resource.attributes, span.resource.schema_url,
        span.instrumentation_scope,
    )


def _request(t: Telemetry, n: int, **kwargs: Any) -> SpanHandle:
    return t.request_span("health", request_id=f"r{n}", connection_id="conn-1", client_id="cli",
                          body={"probe": True}, start_time=T0 + n, **kwargs).start()


def _workload(t: Telemetry) -> list[SpanHandle]:
    """Request spans as the gateway's observer makes them, with children, in every shape it meets."""
    handles = []
    root = _request(t, 1, ids=(0xA1, 0xB1))  # the relay's ids, no parent: a new random trace
    root.set("clawdbot.request.headers", '{"user-agent":"x"}').set_status("success")
    root.end(T0 + 100)
    handles.append(root)
    joined = _request(t, 2, ids=(0xA2, 0xB2), parent=SAMPLED_PARENT)  # the client's trace
    session = t.session_span("main", model="claude-sonnet-4-5", parent=joined, start_time=T0 + 3).start()
    session.set("clawdbot.session.run_id", "run-1")
    session.end(T0 + 4)
    joined.set_status("failure", "upstream said no", "runtime")
    joined.end(T0 + 200)
    random_parent = _request(t, 3, ids=(0xA3, 0xB3), parent=RANDOM_PARENT)
    random_parent.end(T0 + 300)
    unsampled = _request(t, 4, ids=(0xA4, 0xB4), parent=UNSAMPLED_PARENT)  # not sampled: not exported
    unsampled.end(T0 + 400)
    no_ids = _request(t, 5)  # ids from the provider's generator, as the embedded gateway's requests
    no_ids.span.add_event("queued", timestamp=T0 + 5)  # the oldest: dropped under tight limits
    no_ids.span.record_exception(ValueError("bad frame"), timestamp=T0 + 6, attributes={"extra": 1})
    no_ids.span.add_event("retry", {"attempt": 2}, timestamp=T0 + 7)
    no_ids.span.update_name("gateway.request health renamed")
    no_ids.set_status("timeout", "no response", "timeout")
    no_ids.set_status("success")  # OK after ERROR: the SDK takes it, then nothing more
    no_ids.set_status("failure", "too late")
    no_ids.end(T0 + 500)
    no_ids.set("clawdbot.request.method", "after the end")  # ignored once ended
    no_ids.end(T0 + 600)  # a second end changes nothing
    discarded = _request(t, 6, ids=(0xA6, 0xB6))
    discarded.discard()  # SDK path: left without an end; deferred: forgotten; neither exported
    long_values = _request(t, 7, ids=(0xA7, 0xB7))
    long_values.set("clawdbot.request.body_summary", "x" * 50).set("clawdbot.request.body_bytes", 12)
    long_values.end(T0 + 700)
    handles += [joined, random_parent, unsampled, no_ids, long_values]
    return handles


@pytest.fixture(params=[None, SpanLimits(max_span_attributes=5, max_span_attribute_length=8, max_events=2,
                                         max_event_attributes=2, max_links=2, max_link_attributes=2)],
                ids=["default-limits", "tight-limits"])
def limits(request: pytest.FixtureRequest) -> SpanLimits | None:
    return request.param  # type: ignore[no-any-return]


def _run(monkeypatch: pytest.MonkeyPatch, fast: bool, limits: SpanLimits | None,
         workload: Callable[[Telemetry], Any] = _workload) -> tuple[list[ReadableSpan], Capture, Any]:
    monkeypatch.setenv(FAST_EXPORT_ENV, "1" if fast else "0")
    clock = iter(range(T0 + 10_000, T0 + 20_000))  # the same times on both paths, for spans timed by the clock
    monkeypatch.setattr(sdk_trace, "time_ns", lambda: next(clock))
    monkeypatch.setattr(_deferred_spans, "time_ns", lambda: next(clock))
    with capture_telemetry(strict=False) as cap:
        if limits is not None:
            cap.telemetry.tracer._span_limits = limits  # type: ignore[attr-defined]
        result = workload(cap.telemetry)
        return list(cap.finished_spans()), cap, result


def test_deferred_request_spans_export_what_the_sdk_exports(monkeypatch: pytest.MonkeyPatch,
                                                            limits: SpanLimits | None) -> None:
    fast, _, fast_handles = _run(monkeypatch, True, limits)
    sdk, _, sdk_handles = _run(monkeypatch, False, limits)
    # the switch was honoured: deferred spans on one side, the SDK's on the other
    assert {type(h.span).__name__ for h in fast_handles} == {"DeferredSpan", "NonRecordingSpan"}
    assert not any(isinstance(h.span, DeferredSpan) for h in sdk_handles)
    assert len(fast) == 6 and [s.name for s in fast] == [s.name for s in sdk]
    for got, want in zip(fast, sdk, strict=True):
        assert _fields(got) == _fields(want), got.name
    # the handles answer alike while running (children, the upstream's traceparent)
    assert [h.traceparent for h in fast_handles] == [h.traceparent for h in sdk_handles]
    flags = {h.span_id: h.span.get_span_context().trace_flags for h in fast_handles}
    assert flags[f"{0xB1:016x}"] == TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
    assert flags[f"{0xB4:016x}"] == TraceFlags(TraceFlags.DEFAULT)


class _Boom(Exception):
    pass


def _every_category(t: Telemetry) -> list[trace.Span]:
    """Spans of every category, the ways host code and the collection points start them: `with` (current,
    timed by the clock, an error escaping), the decorator, `start()` ended elsewhere, links, long-lived
    spans whose attributes and events are set past the limits."""
    spans: list[trace.Span] = []
    with t.session_span("main", model="claude-sonnet-4-5", provider="anthropic", session_key="agent:main:main",
                        run_id="run-9") as session:
        spans.append(session.span)
        for turn in range(12):  # a long session updated in place: bounded like the SDK's own span
            session.set("clawdbot.session.run_id", f"run-{turn}")
            session.set("gen_ai.response.model", f"claude-sonnet-4-5-{turn}")
        for n in range(5):  # events, and links added after the start (as host code or an instrumentation may)
            session.span.add_event("turn", {"n": n, "a": 1, "b": 2})
            session.span.add_link(trace.SpanContext(CLIENT_TRACE, 0xC0 + n, False), {"n": n, "a": 1, "b": 2})
        session.span.add_link(trace.INVALID_SPAN_CONTEXT)  # ignored, as the SDK ignores it
        with pytest.raises(_Boom), t.tool_call_span("exec", call_id="call-1", params={"cmd": "ls"}) as tool:
            spans.append(tool.span)
            assert trace.get_current_span() is tool.span  # current while inside
            raise _Boom("tool failed")
        model = t.model_call_span("gpt-5", provider="openai", start_time=T0 + 20).start()  # current parent
        model.set("gen_ai.usage.input_tokens", 10).set("gen_ai.usage.output_tokens", 5).set_status("success")
        model.end(T0 + 30)
        spans.append(model.span)

    @t.spawn_span("helper", model="m", task="look it up\nthen report", requested_by="main")
    def spawn() -> trace.Span:
        return trace.get_current_span()

    spans.append(spawn())
    message = t.message_span("main", "helper", "task", operation="deliver", message_id="m-1",
                             parent=session, start_time=T0 + 40).start()
    message.record_error("not delivered", "delivery")
    message.end(T0 + 41)
    spans.append(message.span)
    job = t.job_span("nightly", job_id="j-1", trigger="manual", start_time=T0 + 50).start()
    validation = t.validation_span("L2", task_id="t-1", parent=job, start_time=T0 + 51).start()
    validation.set_status("timeout", "grader gone", "timeout")
    validation.end(T0 + 52)
    job.end(T0 + 53)
    linked = t.start_span("job", attributes={"clawdbot.job.name": "linked"}, start_time=T0 + 60,
                          links=[trace.Link(job.span.get_span_context())]).start()  # links: the SDK's way
    linked.end(T0 + 61)
    spans += [job.span, validation.span, linked.span]
    return spans


def test_every_span_category_exports_what_the_sdk_exports(monkeypatch: pytest.MonkeyPatch,
                                                          limits: SpanLimits | None) -> None:
    fast, _, fast_live = _run(monkeypatch, True, limits, _every_category)
    sdk, _, sdk_live = _run(monkeypatch, False, limits, _every_category)
    assert [type(span).__name__ for span in fast_live] == ["DeferredSpan"] * 7 + ["_Span"]  # linked: the SDK's
    assert not any(isinstance(span, DeferredSpan) for span in sdk_live)
    assert len(fast) == 8 and [s.name for s in fast] == [s.name for s in sdk]
    for got, want in zip(fast, sdk, strict=True):
        assert _fields(got) == _fields(want), got.name
    tool = next(s for s in fast if s.name == "execute_tool exec")
    assert tool.status.status_code.name == "ERROR" and tool.events[0].name == "exception"


class _Watching(SpanProcessor):
    """A processor that wants to see spans start (as the SDK's own `on_start` would show them)."""

    def __init__(self) -> None:
        self.started = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started += 1


def test_a_processor_that_sees_spans_start_keeps_the_sdk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    watching = _Watching()

    def workload(t: Telemetry) -> list[SpanHandle]:
        first = _request(t, 1, ids=(0xA1, 0xB1))
        t.tracer_provider.add_span_processor(watching)  # type: ignore[attr-defined]
        second = _request(t, 2, ids=(0xA2, 0xB2))
        first.end(T0 + 10)
        second.end(T0 + 20)
        return [first, second]

    spans, _, (first, second) = _run(monkeypatch, True, None, workload)
    assert isinstance(first.span, DeferredSpan) and not isinstance(second.span, DeferredSpan)
    assert watching.started == 1 and len(spans) == 2


def _ids(spans: list[ReadableSpan]) -> Iterator[tuple[int, int]]:
    for span in spans:
        assert span.context is not None
        yield span.context.trace_id, span.context.span_id


def test_deferred_spans_take_the_providers_ids_when_none_are_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    def workload(t: Telemetry) -> None:
        t.tracer.id_generator = RandomIdGenerator()  # type: ignore[attr-defined]
        _request(t, 1).end(T0 + 10)

    spans, _, _ = _run(monkeypatch, True, None, workload)
    ((trace_id, span_id),) = _ids(spans)
    assert trace_id and span_id and spans[0].context is not None
    assert spans[0].context.trace_flags == TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)

"""The direct span encoder against the SDK's `encode_spans`: the same request, whatever the spans hold."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from clawdbot_otel._sdk_internals import otlp_span_exporter
from clawdbot_otel._span_export import encode_spans_fast
from clawdbot_otel.testing import capture_telemetry


def _spans(provider_kwargs: dict[str, Any] | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    spans: list[ReadableSpan] = []
    for resource in (Resource.create({"service.name": "a"}), Resource({"service.name": "b"}, "https://schema/1")):
        provider = TracerProvider(resource=resource, **(provider_kwargs or {}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        plain = provider.get_tracer("plain")
        scoped = provider.get_tracer("scoped", "1.2", "https://schema/scope", {"scope.attr": 1})
        remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
                             TraceFlags(1), TraceState([("vendor", "v1"), ("other", "x")]))
        with plain.start_as_current_span("root", kind=SpanKind.SERVER, attributes={
                "s": "text", "b": True, "i": -5, "big": 2**62, "f": 1.5, "list": ["x", "y"], "ints": (1, 2),
                "empty": "", "unicode": "caf\u00e9 \u00b7", "bytes": b"\x00\x01"}):
            pass
        with scoped.start_as_current_span("child", context=set_span_in_context(NonRecordingSpan(remote)),
                                          kind=SpanKind.CLIENT,
                                          links=[Link(remote, {"link.attr": "l"}), Link(remote)]) as span:
            span.add_event("evt", {"e": 1})
            span.add_event("")
            span.set_status(Status(StatusCode.ERROR, "it broke"))
        with plain.start_as_current_span("", kind=SpanKind.CONSUMER) as span:
            span.set_status(Status(StatusCode.OK))
        for kind in (SpanKind.INTERNAL, SpanKind.PRODUCER):
            with plain.start_as_current_span(f"k{kind.value}", kind=kind):
                pass
    spans.extend(exporter.get_finished_spans())
    return spans


def test_the_bytes_parse_to_what_the_sdk_encodes() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans_fast(spans))
    assert ours == encode_spans(spans)
    assert len(ours.resource_spans) == 2 and sum(len(s.spans) for rs in ours.resource_spans
                                                for s in rs.scope_spans) == len(spans)


def test_a_value_beyond_int64_is_left_out_as_the_sdk_does() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("big", attributes={"huge": 2**70, "ok": 1}):
        pass
    spans = exporter.get_finished_spans()
    request = ExportTraceServiceRequest.FromString(encode_spans_fast(spans))
    assert request == encode_spans(spans)
    (span,) = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [a.key for a in span.attributes] == ["ok"]


def test_limits_and_dropped_counts_match_too() -> None:
    spans = _spans({"span_limits": SpanLimits(max_span_attributes=3, max_events=1, max_links=1,
                                              max_attribute_length=4)})
    assert any(s.dropped_attributes or s.dropped_events or s.dropped_links for s in spans)
    assert ExportTraceServiceRequest.FromString(encode_spans_fast(spans)) == encode_spans(spans)


def test_the_facades_spans_encode_the_same() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry
        with t.request_span("agent", request_id="1", body={"a": 1}), t.session_span(
                "main", model="claude-opus-4-5", session_key="agent:main:main") as session:
            session.update({"gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 10})
            with t.tool_call_span("read", call_id="c1"):
                pass
        spans = cap.finished_spans()
    assert ExportTraceServiceRequest.FromString(encode_spans_fast(spans)) == encode_spans(spans)


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []  # noqa: RUF012

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", _Receiver.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_exporter_sends_the_request_with_the_sdks_headers(receiver: tuple[str, list[bytes]]) -> None:
    url, bodies = receiver
    spans = _spans()
    exporter = otlp_span_exporter("http/protobuf", endpoint=url, headers={"x-tenant": "t1"})
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    (body,) = bodies
    assert ExportTraceServiceRequest.FromString(body) == encode_spans(spans)
    exporter.shutdown()


def test_cached_attributes_encode_the_same_the_second_time_and_under_other_tags() -> None:
    """Repeated short strings come from a cache keyed by field tag too: a span attribute, an event
    attribute and a link attribute with the same key and value each keep their own field."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    remote = SpanContext(0x1, 0x2, True, TraceFlags(1))
    same = {"k": "v", "long": "x" * 300}
    for _ in range(2):
        with provider.get_tracer("t").start_as_current_span("s", attributes=same, links=[Link(remote, same)]) as span:
            span.add_event("e", same)
    spans = exporter.get_finished_spans()
    first = encode_spans_fast(spans)
    assert encode_spans_fast(spans) == first
    assert ExportTraceServiceRequest.FromString(first) == encode_spans(spans)

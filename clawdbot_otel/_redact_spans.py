"""Spans pass the redactor on their way out: every exporter `setup()` and `capture_telemetry()` build is
wrapped, so span names, attributes, events (the exception type, message and stack trace an error
records), links and status descriptions are redacted whoever set them (our facade, a collection point
through `handle.span`, another instrumentation on the same provider).

The work happens in the exporter's thread, never on the host's: a span with nothing that looks like a
secret is handed on as it is after one pre-check over its strings; only a span with a marker is copied
(through the SDK's public `ReadableSpan`, `Event` and `Link` constructors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from ._redact import Redactor

__all__ = ["RedactingSpanExporter", "redact_span"]


def _needs_scrub(span: ReadableSpan, redactor: Redactor) -> bool:
    """Whether any string of the span could hold a secret (one flat loop: this runs for every span)."""
    needs = redactor.needs_scrub
    if needs(span.name) or (span.status.description and needs(span.status.description)):
        return True
    groups = [span.attributes, *(event.attributes for event in span.events), *(link.attributes for link in span.links)]
    for event in span.events:
        if needs(event.name):
            return True
    for attributes in groups:
        if not attributes:
            continue
        for value in attributes.values():
            if isinstance(value, str):
                if needs(value):
                    return True
            # the SDK keeps sequences as tuples (and an ABC check would be slow here)
            elif isinstance(value, tuple | list) and any(needs(v) for v in value if isinstance(v, str)):
                return True
    return False


def _attributes(redactor: Redactor, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: redactor.attribute(value) for key, value in (attributes or {}).items()}


def redact_span(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """`span` itself when nothing in it could be a secret, else a copy with every string redacted."""
    if not _needs_scrub(span, redactor):
        return span
    old = span.attributes
    attributes = BoundedAttributes(attributes=_attributes(redactor, old), immutable=False)
    attributes.dropped = old.dropped if isinstance(old, BoundedAttributes) else 0
    status = span.status
    return ReadableSpan(
        name=redactor.scrub(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=tuple(
            Event(redactor.scrub(e.name), _attributes(redactor, e.attributes), e.timestamp) for e in span.events
        ),
        links=tuple(Link(link.context, _attributes(redactor, link.attributes)) for link in span.links),
        kind=span.kind,
        status=Status(status.status_code, redactor.scrub(status.description) if status.description else None),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Hands `inner` the spans of each batch redacted by `redactor` (see the module's docstring)."""

    def __init__(self, inner: SpanExporter, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        redactor = self.redactor
        return self.inner.export([redact_span(span, redactor) for span in spans])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()

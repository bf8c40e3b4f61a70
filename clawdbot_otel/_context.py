"""`correlation_id` as W3C baggage, so it crosses asyncio tasks, threads and process boundaries.

Contextvars carry the OTel context into `asyncio.create_task` and `gather` by themselves; baggage
also travels in `baggage` headers and in the gateway's frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import baggage, context

__all__ = ["CORRELATION_BAGGAGE_KEY", "correlation", "current_correlation_id"]

CORRELATION_BAGGAGE_KEY = "correlation_id"


def current_correlation_id() -> str | None:
    value = baggage.get_baggage(CORRELATION_BAGGAGE_KEY)
    return value if isinstance(value, str) else None


@contextlib.contextmanager
def correlation(correlation_id: str) -> Iterator[str]:
    """Within the block, spans and logs carry `correlation_id` (and so do tasks started in it)."""
    token = context.attach(baggage.set_baggage(CORRELATION_BAGGAGE_KEY, correlation_id))
    try:
        yield correlation_id
    finally:
        context.detach(token)

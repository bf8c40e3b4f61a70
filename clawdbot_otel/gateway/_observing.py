"""What every event family of the frame observer shares: frame values, bounded sets, requests."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from clawdbot_otel import SpanHandle, Telemetry
from clawdbot_otel.conventions import METRICS_BY_NAME, OTHER

__all__ = [
    "LRU",
    "MS",
    "NS",
    "STATUSES",
    "Connection",
    "Request",
    "RequestEnding",
    "error_message",
    "error_type_of",
    "frame_ns",
    "num",
    "source_error",
]

NS = 1_000_000_000
MS = 1_000_000
#: A frame timestamp further than this from the receive time is not trusted (clock skew, garbage).
_MAX_SKEW_NS = 600 * NS

_METHODS = next(lb.values for lb in METRICS_BY_NAME["gateway_requests_total"].labels if lb.name == "method")
STATUSES = next(lb.values for lb in METRICS_BY_NAME["gateway_requests_total"].labels if lb.name == "status")


def error_type_of(error: Mapping[str, Any] | None, default: str = "runtime") -> str:
    """The catalogue's error_type for a gateway ErrorShape."""
    if not error:
        return default
    code = str(error.get("code") or "").upper()
    message = str(error.get("message") or "").lower()
    if "TIMEOUT" in code or "timed out" in message or "timeout" in message:
        return "timeout"
    if code in ("UNAUTHORIZED", "FORBIDDEN", "NOT_PAIRED", "AUTH") or "unauthorized" in message or "auth" in message:
        return "auth"
    if code == "INVALID_REQUEST":
        return "protocol"
    return default


def error_message(error: Mapping[str, Any] | None) -> str | None:
    if not error:
        return None
    message = error.get("message")
    return str(message)[:500] if message is not None else str(error.get("code") or "error")


def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def frame_ns(ms: Any, fallback_ns: int) -> int:
    """A frame's epoch-ms timestamp as ns, when present and within the skew window of the receive time."""
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        ns = int(ms * MS)
        if abs(ns - fallback_ns) <= _MAX_SKEW_NS:
            return ns
    return fallback_ns


def source_error(telemetry: Telemetry, reason: str) -> None:
    telemetry.increment("clawdbot_otel_source_errors_total", {"source": "frames", "reason": reason})


class LRU:
    """A bounded set: `add` says whether the key is new."""

    __slots__ = ("_cap", "_items")

    def __init__(self, cap: int) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._cap = cap

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add(self, key: Any) -> bool:
        items = self._items
        if key in items:
            return False
        items[key] = None
        if len(items) > self._cap:
            items.popitem(last=False)
        return True


class Connection:
    __slots__ = ("auth_done", "client_id", "connect_id", "headers_json", "id", "requests")

    def __init__(self, conn_id: str, headers_json: str | None) -> None:
        self.id = conn_id
        self.headers_json = headers_json
        self.client_id: str | None = None
        self.connect_id: str | None = None
        self.auth_done = False
        self.requests: dict[str, Request] = {}


class RequestEnding(Protocol):
    """Who ends a request (the request tracker): a run that times out ends the request that started it."""

    def end(self, req: Request, now: int, status: str, error_type: str | None = None,
            message: str | None = None) -> None: ...


class Request:
    __slots__ = ("conn", "deadline_ns", "id", "label", "method", "owner", "run_key", "span", "start_ns")

    def __init__(self, owner: RequestEnding, conn: Connection, frame_id: str, method: str, span: SpanHandle, *,
                 start_ns: int, deadline_ns: int) -> None:
        self.owner = owner
        self.conn = conn
        self.id = frame_id
        self.method = method
        self.label = method if method in _METHODS else OTHER
        self.span = span
        self.start_ns = start_ns
        self.deadline_ns = deadline_ns
        self.run_key: str | None = None

"""Gateway protocol frames (OpenClaw protocol 4): parse, validate, and build error responses.

Three shapes travel over the WebSocket, one JSON object per message:

    {"type": "req", "id": "...", "method": "...", "params": {...}, "traceparent"?: "00-..."}
    {"type": "res", "id": "...", "ok": true|false, "payload"?: ..., "error"?: {"code", "message", ...}}
    {"type": "event", "event": "...", "payload"?: ..., "seq"?: 1}

Parsing never raises anything but `FrameError`, whose `reason` is a short, bounded word used as a
metric label (`clawdbot_otel_source_errors_total{source="frames", reason}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ERROR_INVALID_REQUEST",
    "ERROR_UNAVAILABLE",
    "PROTOCOL_VERSION",
    "EventFrame",
    "Frame",
    "FrameError",
    "RequestFrame",
    "ResponseFrame",
    "error_response",
    "frame_from_dict",
    "parse_frame",
    "response",
]

PROTOCOL_VERSION = 4

# The gateway's ErrorShape codes (`{code, message, details?, retryable?, retryAfterMs?}`).
ERROR_INVALID_REQUEST = "INVALID_REQUEST"
ERROR_UNAVAILABLE = "UNAVAILABLE"


class FrameError(ValueError):
    """A message that is not a valid frame; `reason` is a metric label, `frame_id` the req id if any."""

    def __init__(self, reason: str, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.frame_id = frame_id


@dataclass(slots=True)
class RequestFrame:
    id: str
    method: str
    params: Any
    traceparent: str | None
    raw: dict[str, Any]


@dataclass(slots=True)
class ResponseFrame:
    id: str
    ok: bool
    payload: Any
    error: dict[str, Any] | None
    raw: dict[str, Any]


@dataclass(slots=True)
class EventFrame:
    event: str
    payload: Any
    seq: int | None
    raw: dict[str, Any]


Frame = RequestFrame | ResponseFrame | EventFrame


def parse_frame(data: str | bytes) -> Frame:
    """The frame in one WebSocket message, or `FrameError` saying why it is not one."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError("invalid_json", "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("not_object", "frame must be a JSON object")
    return frame_from_dict(obj)


def frame_from_dict(obj: dict[str, Any]) -> Frame:
    kind = obj.get("type")
    if kind == "event":
        event = obj.get("event")
        if not isinstance(event, str) or not event:
            raise FrameError("invalid_event", "event frame needs a string `event`")
        seq = obj.get("seq")
        return EventFrame(event, obj.get("payload"), seq if isinstance(seq, int) else None, obj)
    if kind == "req":
        rid = obj.get("id")
        rid_text = rid if isinstance(rid, str) and rid else None
        method = obj.get("method")
        if rid_text is None:
            raise FrameError("invalid_req", "request frame needs a string `id`")
        if not isinstance(method, str) or not method:
            raise FrameError("invalid_req", "request frame needs a string `method`", rid_text)
        tp = obj.get("traceparent")
        return RequestFrame(rid_text, method, obj.get("params"), tp if isinstance(tp, str) else None, obj)
    if kind == "res":
        rid = obj.get("id")
        ok = obj.get("ok")
        if not isinstance(rid, str) or not isinstance(ok, bool):
            raise FrameError("invalid_res", "response frame needs a string `id` and a boolean `ok`")
        error = obj.get("error")
        return ResponseFrame(rid, ok, obj.get("payload"), error if isinstance(error, dict) else None, obj)
    if kind is None:
        rid = obj.get("id")
        raise FrameError("missing_type", "frame has no `type` (req, res or event)",
                         rid if isinstance(rid, str) else None)
    rid = obj.get("id")
    raise FrameError("unknown_type", f"unknown frame type {str(kind)[:40]!r}", rid if isinstance(rid, str) else None)


def response(frame_id: str, payload: Any) -> dict[str, Any]:
    return {"type": "res", "id": frame_id, "ok": True, "payload": payload}


def error_response(
    frame_id: str | None, code: str, message: str, *, details: Any = None, retryable: bool | None = None,
) -> dict[str, Any]:
    """`{type: res, id, ok: false, error: {code, message, details?, retryable?}}` (the gateway's ErrorShape).

    A message that had no usable id gets id "" so the client still sees a response frame.
    """
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    if retryable is not None:
        error["retryable"] = retryable
    return {"type": "res", "id": frame_id or "", "ok": False, "error": error}

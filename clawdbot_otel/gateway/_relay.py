"""What the proxy changes on the way through: a request's `traceparent`, and close codes that cannot be
sent on as they came."""

from __future__ import annotations

import re

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection

from clawdbot_otel.frames import RequestFrame

__all__ = ["close_args", "inject_traceparent"]

#: Close codes a peer may send (RFC 6455 7.4): others (1005, 1006, 1015) are facts, not codes to send.
_SENDABLE = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))
_TRACEPARENT_VALUE = re.compile(r"^[0-9A-Za-z-]{0,128}$")


def inject_traceparent(message: str | bytes, frame: RequestFrame, traceparent: str) -> str | bytes:
    """The same message with its top-level `traceparent` set; every other byte unchanged.

    A new field is appended before the closing brace; an existing string value is replaced in place
    when it occurs exactly once as a `"traceparent": "<value>"` pair. Anything else (an odd value, a
    duplicate) falls back to re-encoding the frame, which keeps the JSON but not the formatting.
    """
    text = message.decode() if isinstance(message, bytes) else message
    raw = frame.raw
    if "traceparent" not in raw:
        end = text.rstrip().rfind("}")
        out = f'{text[:end]},"traceparent":"{traceparent}"{text[end:]}'
    else:
        old = raw["traceparent"]
        out = ""
        if isinstance(old, str) and _TRACEPARENT_VALUE.match(old):
            pattern = re.compile(r'"traceparent"(\s*:\s*)"' + re.escape(old) + '"')
            found = pattern.findall(text)
            if len(found) == 1:
                out = pattern.sub(lambda m: f'"traceparent"{m.group(1)}"{traceparent}"', text)
                # the one plain occurrence may be a nested field while the top-level value is written
                # with escapes: then the nested one was changed, and the frame is re-encoded instead
                if orjson.loads(out).get("traceparent") != traceparent:
                    out = ""
        if not out:
            out = orjson.dumps({**raw, "traceparent": traceparent}).decode()
    return out.encode() if isinstance(message, bytes) else out


def close_args(conn: ServerConnection | ClientConnection) -> tuple[int, str]:
    """The close code and reason to pass on to the other side of the relay."""
    code = conn.close_code
    reason = conn.close_reason or ""
    if code is not None and (code in _SENDABLE or 3000 <= code <= 4999):
        return code, reason
    if code == 1005 or code is None:
        return 1000, reason
    return 1011, reason or "peer connection lost"

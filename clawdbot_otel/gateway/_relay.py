"""What the proxy changes on the way through: a request's `traceparent`."""

from __future__ import annotations

import random
import re

import orjson

from clawdbot_otel.frames import RequestFrame

__all__ = ["inject_traceparent", "request_ids"]

_TRACEPARENT_VALUE = re.compile(r"^[0-9A-Za-z-]{0,128}$")
#: W3C trace context, as the OTel propagator reads it (version, trace id, span id, flags, future fields)
_W3C = re.compile(r"^\s*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\s*$")
_SAMPLED_AND_RANDOM = 0x03
_SAMPLED_RANDOM_ROOT = "03"  # a root span: sampled (the SDK keeps every trace), random trace id


def request_ids(client_traceparent: str | None) -> tuple[str, tuple[int, int]]:
    """The request span's `traceparent` for the upstream and its (trace id, span id), chosen by the relay
    before the span exists (the observer starts it with these ids: `request_span(ids=...)`).

    A valid client `traceparent` (as the OTel propagator reads it) gives the trace id and the flags
    (sampled as the parent-based sampler decides, random-trace-id as the client says); otherwise a new
    random trace id, sampled. The span id is new and random."""
    span_id = random.getrandbits(64) or 1
    match = _W3C.match(client_traceparent) if client_traceparent else None
    if match is not None:
        version, trace_hex, parent_span, flags, rest = match.groups()
        if (trace_hex != "0" * 32 and parent_span != "0" * 16 and version != "ff"
                and not (version == "00" and rest)):
            flags = f"{int(flags, 16) & _SAMPLED_AND_RANDOM:02x}"
            return f"00-{trace_hex}-{span_id:016x}-{flags}", (int(trace_hex, 16), span_id)
    trace_id = random.getrandbits(128) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-{_SAMPLED_RANDOM_ROOT}", (trace_id, span_id)


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

"""Frames with arbitrary JSON (and non-JSON) in every field into the frame observer, fed the way the gateway
feeds it: the real OpenClaw captures with leaves and subtrees replaced, frames dropped, duplicated and
reordered, and messages that are no frame at all. Strict mode, so a swallowed bug would raise here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clawdbot_otel.frames import FrameError, RequestFrame, parse_frame
from clawdbot_otel.gateway import FrameObserver
from clawdbot_otel.testing import capture_telemetry
from tests.collect.helpers import source_errors
from tests.gateway.replay import CAPTURES, records

_CAPTURED = {name: [(r["dir"], r["frame"]) for r in records(name)] for name in CAPTURES}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    copy[path[0]] = _replace(obj[path[0]], path[1:], value)
    return copy


@st.composite
def mutated_sessions(draw: st.DrawFn) -> list[tuple[str, str | bytes]]:
    frames = list(_CAPTURED[draw(st.sampled_from(CAPTURES))])
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(frames) - 1))
        direction, frame = frames[i]
        action = draw(st.sampled_from(["replace", "replace", "drop", "duplicate", "swap"]))
        if action == "replace":
            path = draw(st.sampled_from(_paths(frame)))
            frames[i] = (direction, _replace(frame, path, draw(json_values)))
        elif action == "drop" and len(frames) > 1:
            del frames[i]
        elif action == "duplicate":
            frames.insert(i, frames[i])
        elif action == "swap":
            j = draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
    # stdlib json: it writes integers beyond 64 bits, which a peer may send too
    messages: list[tuple[str, str | bytes]] = [(d, json.dumps(f)) for d, f in frames]
    for _ in range(draw(st.integers(0, 3))):  # messages that are no frame, or frames of any shape
        junk = draw(st.one_of(st.text(max_size=40), st.binary(max_size=40),
                              json_values.map(json.dumps)))
        messages.insert(draw(st.integers(0, len(messages))), (draw(st.sampled_from(["c2s", "s2c"])), junk))
    return messages


def _feed(observer: FrameObserver, messages: list[tuple[str, str | bytes]]) -> int:
    """As the gateway does: one connection per `connect.challenge`; returns how many were no frame."""
    invalid = 0
    conn, count, t = "c0", 0, 1_800_000_000_000_000_000
    observer.connection_opened(conn, {"user-agent": "fuzz"})
    for direction, message in messages:
        t += 1_000_000
        try:
            frame = parse_frame(message)
        except FrameError as exc:
            observer.invalid(direction, exc.reason)
            invalid += 1
            continue
        if getattr(frame, "event", None) == "connect.challenge":
            observer.connection_closed(conn, 1000)
            count += 1
            conn = f"c{count}"
            observer.connection_opened(conn, {"user-agent": "fuzz"})
        if direction == "c2s" and isinstance(frame, RequestFrame):
            observer.request(conn, frame, t)
        else:
            observer.frame(conn, direction, frame, t)
    observer.connection_closed(conn, 1000)
    observer.sweep(t + 3_600 * 1_000_000_000)
    observer.close(t + 3_601 * 1_000_000_000)
    return invalid


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a session is long to print
@given(mutated_sessions())
def test_arbitrary_frames_never_raise_and_every_message_that_is_no_frame_is_counted(
        messages: list[tuple[str, str | bytes]]) -> None:
    with capture_telemetry(strict=True) as cap:
        observer = FrameObserver(cap.telemetry, register_gauges=False)
        invalid = _feed(observer, messages)
        errors = source_errors(cap, "frames")
        assert "observer_error" not in errors
        assert sum(n for reason, n in errors.items() if reason in
                   {"invalid_json", "not_object", "invalid_event", "invalid_req", "invalid_res", "missing_type",
                    "unknown_type"}) == invalid
        assert observer.open_runs == 0 and observer.open_requests == 0
        cap.finished_spans()
        cap.collect_metrics()

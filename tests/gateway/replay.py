"""Replay the real OpenClaw captures (tests/gateway/fixtures, from openclaw 2026.9.6) through a FrameObserver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clawdbot_otel.frames import RequestFrame, frame_from_dict
from clawdbot_otel.gateway import FrameObserver

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURES = ("agent-turn-plain.jsonl", "agent-turn-tool-call.jsonl", "agent-turns-model-error.jsonl")
_MS = 1_000_000


def records(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _frame_ms(frame: dict[str, Any]) -> float | None:
    payload = frame.get("payload")
    if not isinstance(payload, dict):
        return None
    for key in ("ts", "acceptedAt"):
        if isinstance(payload.get(key), int | float):
            return float(payload[key])
    task = payload.get("task")
    if isinstance(task, dict) and isinstance(task.get("updatedAt"), int | float):
        return float(task["updatedAt"])
    return None


def timed_frames(name: str) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(direction, frame, receive time ns): frame timestamps where they exist, else 1 ms after the last."""
    last = 0
    for rec in records(name):
        frame = rec["frame"]
        ms = _frame_ms(frame)
        t = int(ms * _MS) if ms is not None else last + _MS
        t = max(t, last + 1000)
        last = t
        yield rec["dir"], frame, t


def replay(observer: FrameObserver, name: str, *, close: bool = True) -> int:
    """Feed a capture; each `connect.challenge` opens a new connection (one CLI call each). Returns the last time."""
    conn: str | None = None
    count = 0
    last = 0
    for direction, raw, t in timed_frames(name):
        last = t
        if raw.get("type") == "event" and raw.get("event") == "connect.challenge":
            if conn is not None and close:
                observer.connection_closed(conn, 1000)
            count += 1
            conn = f"{name}#{count}"
            observer.connection_opened(conn, {"user-agent": "openclaw-cli", "authorization": "Bearer secret-token"})
        assert conn is not None
        frame = frame_from_dict(raw)
        if direction == "c2s" and isinstance(frame, RequestFrame):
            observer.request(conn, frame, t)
        else:
            observer.frame(conn, direction, frame, t)
    return last

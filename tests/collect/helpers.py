"""Helpers for the collection point tests: a settable clock, file writers, metric point lookups."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from clawdbot_otel.testing import Capture

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a fixed "now" for every test


class FakeClock:
    """A wall clock (epoch seconds) that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def write_json(path: Path, data: Any, *, mtime: float | None = T0) -> Path:
    """Write `data` as JSON; the file's mtime is set (default T0) so ages and latencies are exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def values(cap: Capture, otel_name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """Sum/gauge points of a metric: sorted label items -> value."""
    return {tuple(sorted((p.attributes or {}).items())): p.value for p in cap.metric_points(otel_name)}


def value(cap: Capture, otel_name: str, **labels: str) -> Any:
    """One point's value (None when there is no such point)."""
    return values(cap, otel_name).get(tuple(sorted(labels.items())))


def histogram(cap: Capture, otel_name: str, **labels: str) -> tuple[int, float]:
    """(count, sum) of one histogram point, (0, 0.0) when absent."""
    for p in cap.metric_points(otel_name):
        if dict(p.attributes or {}) == labels:
            return p.count, p.sum
    return 0, 0.0


def source_errors(cap: Capture, source: str) -> dict[str, int]:
    """reason -> count of clawdbot_otel_source_errors_total for one source."""
    out: dict[str, int] = {}
    for p in cap.metric_points("clawdbot_otel.source_errors"):
        attrs = dict(p.attributes or {})
        if attrs.get("source") == source and p.value:
            out[str(attrs["reason"])] = int(p.value)
    return out


def logs(cap: Capture, message_part: str) -> list[dict[str, Any]]:
    return [line for line in cap.log_lines() if message_part in line["message"]]

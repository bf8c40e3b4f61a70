"""Shared helpers: a controllable clock and a reader for active plus rotated (gzip) log files."""

from __future__ import annotations

import calendar
import gzip
from pathlib import Path

import pytest

from clawdbot_otel.logfiles._rotation import parse_rotated


def utc_ns(text: str) -> int:
    """Nanoseconds since the epoch of `YYYY-MM-DDTHH:MM:SS` (UTC)."""
    date, _, clock = text.partition("T")
    y, mo, d = (int(x) for x in date.split("-"))
    h, mi, s = (int(x) for x in clock.split(":"))
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000


class FakeClock:
    """A clock that only moves when told to: `clock()` returns nanoseconds since the epoch."""

    def __init__(self, start: str = "2026-02-24T12:00:00") -> None:
        self.ns = utc_ns(start)

    def __call__(self) -> int:
        return self.ns

    def set(self, text: str) -> None:
        self.ns = utc_ns(text)

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1_000_000_000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def rotated_files(directory: Path) -> list[Path]:
    """Rotated files (compressed or not) of a destination folder, in rotation order."""
    found = [(parse_rotated(p.name), p) for p in directory.iterdir()]
    return [p for parsed, p in sorted((x for x in found if x[0] is not None and not x[0].temporary),
                                      key=lambda x: (x[0].day, x[0].seq))]  # type: ignore[union-attr]


def read_lines(directory: Path) -> list[bytes]:
    """Every line of a destination, oldest file first: rotated (.log.gz or .log), then the active file."""
    lines: list[bytes] = []
    for path in rotated_files(directory):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines += data.splitlines()
    active = directory / f"{directory.name}.log"
    if active.exists():
        lines += active.read_bytes().splitlines()
    return lines

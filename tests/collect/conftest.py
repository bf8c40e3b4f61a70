"""Fixtures for the collection point tests: a strict capture and a settable clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clawdbot_otel.testing import Capture, capture_telemetry

from .helpers import FakeClock


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture_telemetry() as capture:
        yield capture


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

"""The gauge callbacks one collection point registers, so that closing it unregisters them all."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clawdbot_otel import Telemetry
from clawdbot_otel.conventions import GaugeName

__all__ = ["GaugeCallbacks"]

Callback = Callable[[], Iterable[tuple[float, Mapping[str, Any] | None]]]


class GaugeCallbacks:
    __slots__ = ("_registered", "_telemetry")

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._registered: list[tuple[GaugeName, Callback]] = []

    def observe(self, name: GaugeName, callback: Callback) -> None:
        self._telemetry.observe(name, callback)
        self._registered.append((name, callback))

    def close(self) -> None:
        """Unregister: a closed collection point reports nothing (no stale values at the next export)."""
        for name, callback in self._registered:
            self._telemetry.unobserve(name, callback)
        self._registered.clear()

"""The scan loop shared by the folder watchers: poll on an interval, file I/O off the event loop.

Polling (not inotify) because it needs no extra dependency, works on every filesystem (network
mounts, containers' bind mounts) and a scan of a few hundred small files costs well under a
millisecond of CPU per file version change; unchanged files are only stat'ed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from types import TracebackType

from clawdbot_otel import Telemetry

from ._files import SourceErrors
from ._gauges import GaugeCallbacks

__all__ = ["PollingWatcher"]


class PollingWatcher:
    """Base of the watchers: `scan_once()` for tests and cron jobs, `start()`/`stop()` for a loop.

    `scan_once()` never raises: a bug in a scan is counted as `internal_error` and the next scan
    runs as usual. Scans are serialised, so a test calling `scan_once()` while the loop runs is safe.
    """

    __slots__ = ("_errors", "_gauges", "_scan_lock", "_task", "interval_s", "telemetry")

    source = "watcher"
    component = "telemetry"

    def __init__(self, telemetry: Telemetry, *, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s!r}")
        self.telemetry = telemetry
        self.interval_s = interval_s
        self._errors = SourceErrors(telemetry, self.source, self.component)
        self._scan_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._gauges = GaugeCallbacks(telemetry)

    def _scan(self) -> None:
        raise NotImplementedError

    def scan_once(self) -> None:
        """Read the folder(s) once and update metrics, spans and logs (blocking file I/O)."""
        with self._scan_lock:
            try:
                self._scan()
            except Exception as exc:  # telemetry must never crash the host
                self._errors.report("internal_error", self.source, f"{type(exc).__name__}: {exc}", level="ERROR")

    async def run(self) -> None:
        """Scan forever, every `interval_s`, the file I/O in a worker thread."""
        while True:
            await asyncio.to_thread(self.scan_once)
            await asyncio.sleep(self.interval_s)

    def start(self) -> asyncio.Task[None]:
        """Start the scan loop on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            # A fresh context: the loop must not inherit the caller's current span, or every span
            # the watcher makes would become a child of whatever was running at start-up.
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"clawdbot-otel {type(self).__name__}", context=contextvars.Context()
            )
        return self._task

    async def stop(self) -> None:
        """Stop the scan loop; state (what was counted) is kept, so `start()` again counts nothing twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close(self) -> None:
        """Stop reporting gauges."""
        self._gauges.close()

    async def __aenter__(self) -> PollingWatcher:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

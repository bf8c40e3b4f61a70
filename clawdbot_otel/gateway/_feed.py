"""What the proxy's relay hands to the frame observer, and the observer's side of it.

The relay reports five things per connection (`FrameFeed`): opened (with its handshake headers), a
message in either direction (with its receive time, and for a client request the span ids the relay
already put in its `traceparent`; the byte relay hands every message over as bytes, text or binary),
closed, an error of the relay itself, and telemetry lost on the way. A `FrameConsumer` turns them
into `FrameObserver` calls. Two feeds connect them: `LocalFeed`, a bounded queue and a task in the
relay's own process (the library's default), and the observer process (`_observer_process`), which
moves the consumer, the OpenTelemetry SDK and its exporter threads out of the relay's process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

from clawdbot_otel import Telemetry
from clawdbot_otel.frames import FrameError, RequestFrame, parse_frame

from ._observer import FrameObserver
from ._observing import source_error

__all__ = ["QUEUE_FULL", "TOO_LARGE", "FrameConsumer", "FrameFeed", "LocalFeed"]

Ids = tuple[int, int]

#: Reasons (clawdbot_otel_source_errors_total{source="frames"}) for observations lost between relay and observer.
QUEUE_FULL = "observer_queue_full"
#: A message larger than the proxy's `max_size`: relayed, not assembled for the observer.
TOO_LARGE = "message_too_large"


class FrameFeed(Protocol):
    """The relay's side: each call returns at once and never raises (telemetry never stalls a frame)."""

    def opened(self, conn_id: str, headers: Mapping[str, str]) -> None: ...

    def message(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                ids: Ids | None = None) -> None: ...

    def closed(self, conn_id: str, code: int | None, reason: str) -> None: ...

    def relay_error(self, message: str, metadata: Mapping[str, Any]) -> None: ...

    def lost(self, reason: str, count: int) -> None:
        """Messages the relay passed on without handing them over (`reason`: why)."""


class FrameConsumer:
    """The observer's side of a feed: parses messages (those over `max_observed_bytes` in a worker thread)
    and calls the observer; whatever it raises is kept in `errors` and counted, never passed on."""

    def __init__(self, telemetry: Telemetry, observer: FrameObserver, *, max_observed_bytes: int,
                 errors: list[BaseException] | None = None) -> None:
        self.telemetry = telemetry
        self.observer = observer
        self.max_observed_bytes = max_observed_bytes
        self.errors: list[BaseException] = errors if errors is not None else []
        self.open_connections = 0

    def guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            if len(self.errors) < 100:
                self.errors.append(exc)
            with contextlib.suppress(Exception):
                source_error(self.telemetry, "observer_error")
            return None

    def opened(self, conn_id: str, headers: Mapping[str, str]) -> None:
        self.guard(self.observer.connection_opened, conn_id, headers)
        self.open_connections += 1
        self.telemetry.gauge("gateway_active_connections", self.open_connections)
        self.telemetry.log("DEBUG", "gateway", "Connection opened", metadata={"connection_id": conn_id})

    def closed(self, conn_id: str, code: int | None, reason: str) -> None:
        self.guard(self.observer.connection_closed, conn_id, code, reason)
        self.open_connections -= 1
        self.telemetry.gauge("gateway_active_connections", self.open_connections)
        self.telemetry.log("DEBUG", "gateway", "Connection closed",
                           metadata={"connection_id": conn_id, "code": code, "reason": reason})

    def relay_error(self, message: str, metadata: Mapping[str, Any]) -> None:
        self.telemetry.increment("gateway_errors_total", {"error_type": "runtime"})
        self.telemetry.log("ERROR", "gateway", message, metadata=dict(metadata))

    def lost(self, reason: str, count: int) -> None:
        """Observations that never reached the observer (the feed was full, the observer process died)."""
        if count > 0:
            self.telemetry.increment("clawdbot_otel_source_errors_total", {"source": "frames", "reason": reason},
                                     count)

    def message_now(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                    ids: Ids | None = None) -> None:
        """Observe a message in this thread, whatever its size."""
        try:
            frame = parse_frame(message)
        except FrameError as exc:
            self.guard(self.observer.invalid, direction, exc.reason)
            return
        self._observe(conn_id, direction, frame, received_ns, ids)

    async def message(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                      ids: Ids | None = None) -> None:
        if len(message) <= self.max_observed_bytes:
            self.message_now(conn_id, direction, message, received_ns, ids)
            return
        try:  # a large frame is parsed in a thread: the event loop goes on meanwhile
            frame = await asyncio.to_thread(parse_frame, message)
        except FrameError as exc:
            self.guard(self.observer.invalid, direction, exc.reason)
            return
        self._observe(conn_id, direction, frame, received_ns, ids)

    def _observe(self, conn_id: str, direction: str, frame: Any, received_ns: int, ids: Ids | None) -> None:
        if ids is not None and direction == "c2s" and isinstance(frame, RequestFrame):
            self.guard(self.observer.request, conn_id, frame, received_ns, ids)
        else:
            self.guard(self.observer.frame, conn_id, direction, frame, received_ns)


class LocalFeed:
    """The observer in the relay's process: a bounded queue that one task (`run`) observes from.

    A full queue loses the observation (counted as observer_queue_full), never the frame. Opened
    connections are observed at once (their headers must be there before their first request)."""

    _CLOSE = "close"

    def __init__(self, consumer: FrameConsumer, max_queue: int) -> None:
        self.consumer = consumer
        # (conn id, direction or "close", message or (code, reason), received ns, ids)
        self._queue: asyncio.Queue[tuple[str, str, Any, int, Ids | None]] = asyncio.Queue(max_queue)

    def opened(self, conn_id: str, headers: Mapping[str, str]) -> None:
        self.consumer.opened(conn_id, headers)

    def message(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                ids: Ids | None = None) -> None:
        self._put((conn_id, direction, message, received_ns, ids))

    def closed(self, conn_id: str, code: int | None, reason: str) -> None:
        self._put((conn_id, self._CLOSE, (code, reason), 0, None))  # after its frames still queued

    def relay_error(self, message: str, metadata: Mapping[str, Any]) -> None:
        self.consumer.relay_error(message, metadata)

    def lost(self, reason: str, count: int) -> None:
        self.consumer.lost(reason, count)

    def _put(self, item: tuple[str, str, Any, int, Ids | None]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # telemetry falls behind: lose the observation, never the frame
            self.consumer.lost(QUEUE_FULL, 1)

    async def run(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            try:
                await self._one(*item)
            finally:
                queue.task_done()
            # get() does not suspend while items wait: yield after each, so that a burst of events
            # (an agent turn sends ~25) never holds the relay up for longer than one observation.
            await asyncio.sleep(0)

    async def _one(self, conn_id: str, direction: str, message: Any, received: int, ids: Ids | None) -> None:
        if direction == self._CLOSE:
            self.consumer.closed(conn_id, *message)
        else:
            await self.consumer.message(conn_id, direction, message, received, ids)

    async def finish(self, runner: asyncio.Task[None] | None, timeout_s: float = 5.0) -> None:
        """The gateway stops: `runner` (the task in `run`) observes what is queued, in order, including
        the large frame it may be parsing now; what it has not done within `timeout_s` is observed here."""
        if runner is not None and not runner.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
        self.drain()

    def drain(self) -> None:
        """Observe what is still queued, now."""
        queue = self._queue
        while not queue.empty():
            conn_id, direction, message, received, ids = queue.get_nowait()
            if direction == self._CLOSE:
                self.consumer.closed(conn_id, *message)
            else:
                self.consumer.message_now(conn_id, direction, message, received, ids)

"""What the proxy's relay hands to the frame observer, and the observer's side of it.

The relay reports six things per connection (`FrameFeed`): opened (with its handshake headers), a client's
message (with its receive time, and for a request the span ids the relay already put in its `traceparent`; the
byte relay hands every message over as bytes, text or binary), each read of the upstream's bytes as it came
(`stream`: the consumer cuts the messages out of them, `_ws_messages`, so that the relay's event loop does no
per-frame work for them), closed, an error of the relay itself, and telemetry lost on the way. A
`FrameConsumer` turns them into `FrameObserver` calls. Two feeds connect them: `LocalFeed`, a bounded queue
and a task in the relay's own process (the library's default), and the observer process (`_observer_process`),
which moves the consumer, the OpenTelemetry SDK and its exporter threads out of the relay's process.
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
from ._ws_messages import ABNORMAL, UpstreamStream

__all__ = ["QUEUE_FULL", "STREAM_GAP", "TOO_LARGE", "FrameConsumer", "FrameFeed", "LocalFeed"]

Ids = tuple[int, int]

#: Reasons (clawdbot_otel_source_errors_total{source="frames"}) for observations lost between relay and observer.
QUEUE_FULL = "observer_queue_full"
#: A message larger than the proxy's `max_size`: relayed, not assembled for the observer.
TOO_LARGE = "message_too_large"
#: A read of the upstream's bytes not observed: reads before it were lost (the feed was full, the observer
#: process restarted) and its frames are not told apart again yet (`_ws_messages.UpstreamStream`).
STREAM_GAP = "stream_gap"


class FrameFeed(Protocol):
    """The relay's side: each call returns at once and never raises (telemetry never stalls a frame)."""

    def opened(self, conn_id: str, headers: Mapping[str, str]) -> None: ...

    def message(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                ids: Ids | None = None) -> None: ...

    def stream(self, conn_id: str, direction: str, data: bytes, received_ns: int) -> None:
        """One read of a direction's WebSocket bytes, unparsed (the proxy: what the upstream sent)."""

    def closed(self, conn_id: str, code: int | None, reason: str, closed_ns: int = 0) -> None:
        """The connection ended; `code`: the first close frame the relay itself parsed, passed at `closed_ns`
        (None: none), weighed against a close frame in the `stream` (the earlier wins; neither: 1006)."""

    def relay_error(self, message: str, metadata: Mapping[str, Any]) -> None: ...

    def lost(self, reason: str, count: int) -> None:
        """Messages the relay passed on without handing them over (`reason`: why)."""


class FrameConsumer:
    """The observer's side of a feed: parses messages (those over `max_observed_bytes` in a worker thread)
    and calls the observer; whatever it raises is kept in `errors` and counted, never passed on."""

    def __init__(self, telemetry: Telemetry, observer: FrameObserver, *, max_observed_bytes: int,
                 max_message_bytes: int | None = None, errors: list[BaseException] | None = None) -> None:
        self.telemetry = telemetry
        self.observer = observer
        self.max_observed_bytes = max_observed_bytes
        self.max_message_bytes = max_message_bytes
        self.streams: dict[str, UpstreamStream] = {}  # conn id: its upstream's bytes, as they are cut
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

    def closed(self, conn_id: str, code: int | None, reason: str, closed_ns: int = 0) -> None:
        stream = self.streams.pop(conn_id, None)
        if stream is not None:
            code, reason = stream.first_close(code, reason, closed_ns)
        elif code is None:
            code = ABNORMAL
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

    def stream_cut(self, conn_id: str, data: bytes, received_ns: int, gap: bool = False) -> list[bytes]:
        """The messages one read of the upstream's bytes completed (a message too large to observe is
        counted here; so is a read skipped after a `gap`: reads before it were lost on the way)."""
        stream = self.streams.get(conn_id)
        if stream is None:
            stream = self.streams[conn_id] = UpstreamStream(self.max_message_bytes)
        cut = stream.cut(data, received_ns, gap)
        if cut is None:
            self.lost(STREAM_GAP, 1)
            return []
        if None in cut:
            self.lost(TOO_LARGE, cut.count(None))
            return [m for m in cut if m is not None]
        return cut  # type: ignore[return-value]  # no None in it

    async def stream(self, conn_id: str, data: bytes, received_ns: int, gap: bool = False) -> None:
        for message in self.stream_cut(conn_id, data, received_ns, gap):
            await self.message(conn_id, "s2c", message, received_ns)

    def stream_now(self, conn_id: str, data: bytes, received_ns: int, gap: bool = False) -> None:
        for message in self.stream_cut(conn_id, data, received_ns, gap):
            self.message_now(conn_id, "s2c", message, received_ns)

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

    A full queue loses the observation (counted as observer_queue_full), never the frame; after a read of
    the upstream's bytes lost so, the next one says so (the consumer finds the frames again). Opened
    connections are observed at once (their headers must be there before their first request)."""

    _CLOSE = "close"
    _STREAM = "stream"
    _STREAM_AFTER_GAP = "stream after a gap"

    def __init__(self, consumer: FrameConsumer, max_queue: int) -> None:
        self.consumer = consumer
        # (conn id, direction or "stream" or "close", message or bytes read or (code, reason, ns), received ns, ids)
        self._queue: asyncio.Queue[tuple[str, str, Any, int, Ids | None]] = asyncio.Queue(max_queue)
        self._gapped: set[str] = set()  # connections whose upstream stream lost a read since the last one put

    def opened(self, conn_id: str, headers: Mapping[str, str]) -> None:
        self.consumer.opened(conn_id, headers)

    def message(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                ids: Ids | None = None) -> None:
        self._put((conn_id, direction, message, received_ns, ids))

    def stream(self, conn_id: str, direction: str, data: bytes, received_ns: int) -> None:
        gapped = conn_id in self._gapped
        if self._put((conn_id, self._STREAM_AFTER_GAP if gapped else self._STREAM, data, received_ns, None)):
            if gapped:
                self._gapped.discard(conn_id)
        else:
            self._gapped.add(conn_id)

    def closed(self, conn_id: str, code: int | None, reason: str, closed_ns: int = 0) -> None:
        self._gapped.discard(conn_id)
        self._put((conn_id, self._CLOSE, (code, reason, closed_ns), 0, None))  # after its frames still queued

    def relay_error(self, message: str, metadata: Mapping[str, Any]) -> None:
        self.consumer.relay_error(message, metadata)

    def lost(self, reason: str, count: int) -> None:
        self.consumer.lost(reason, count)

    def _put(self, item: tuple[str, str, Any, int, Ids | None]) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # telemetry falls behind: lose the observation, never the frame
            self.consumer.lost(QUEUE_FULL, 1)
            return False
        return True

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
        if direction in (self._STREAM, self._STREAM_AFTER_GAP):
            await self.consumer.stream(conn_id, message, received, direction == self._STREAM_AFTER_GAP)
        elif direction == self._CLOSE:
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
            if direction in (self._STREAM, self._STREAM_AFTER_GAP):
                self.consumer.stream_now(conn_id, message, received, direction == self._STREAM_AFTER_GAP)
            elif direction == self._CLOSE:
                self.consumer.closed(conn_id, *message)
            else:
                self.consumer.message_now(conn_id, direction, message, received, ids)

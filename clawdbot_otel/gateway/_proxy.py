"""The proxy's relay: WebSocket bytes between a client and the upstream gateway, on asyncio transports,
parsed only as far as the observer and the trace context need (docs/proxy-relay.md).

After the opening handshake (`_handshake`), what the upstream sends is written to the client as it
arrives; beside it, with an observer, each read goes to the feed unparsed (`FrameFeed.stream`: the
observer's side cuts the messages out, `_ws_messages`). What
the client sends goes on as it arrives too, except a complete, unfragmented message of at most
`max_observed_bytes`: it is held until whole, and when it is a request frame the relay chooses its
span's ids, puts its `traceparent` in it, masks it again with the client's key and rewrites the length.
With no observer nothing is parsed after the handshake. Each side's reading pauses while the other
side's transport holds more than its write high-water mark (the backpressure: a slow client makes the
relay stop reading the upstream, never buffer without bound).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Callable
from typing import cast

from websockets.uri import parse_uri

from clawdbot_otel.frames import FrameError, RequestFrame, parse_frame

from ._feed import TOO_LARGE, FrameFeed
from ._handshake import (
    HandshakeError,
    UpgradeRequest,
    accept_response,
    close_frame,
    error_response,
    head_end,
    parse_upgrade,
    response_status,
    upstream_request,
)
from ._relay import inject_traceparent, request_ids
from ._ws_messages import CONTROL, MASKED, MessageCutter, apply_mask, close_status

__all__ = ["ProxyRelay"]

#: Time a client has to send its upgrade request, and the upstream to answer ours (as websockets' default).
OPEN_TIMEOUT_S = 10.0
#: Time a closing side has to take what was still buffered for it before its TCP connection is cut.
CLOSE_TIMEOUT_S = 10.0
_HANDSHAKE, _CONNECTING, _OPEN, _REFUSED = range(4)


class UpstreamRejected(Exception):
    """The upstream answered the upgrade request with something other than 101."""


class ProxyRelay:
    """Accepts clients (`protocol` is the factory for `loop.create_server`) and relays each to `upstream`.

    `feed` None (observer off): after the handshake the bytes go on unparsed. `max_message_bytes` bounds
    a message assembled for the feed; a larger one is relayed, not observed, and counted."""

    def __init__(self, upstream: str, feed: FrameFeed | None, *, max_observed_bytes: int,
                 max_message_bytes: int | None, recorded: tuple[str, ...], forwarded: tuple[str, ...],
                 scrub: Callable[[str], str]) -> None:
        self.upstream = upstream
        self.uri = parse_uri(upstream)
        self.feed = feed
        self.max_observed_bytes = max_observed_bytes
        self.max_message_bytes = max_message_bytes
        self.recorded = recorded
        self.forwarded = forwarded
        self.scrub = scrub
        self.ssl = ssl.create_default_context() if self.uri.secure else None
        self.connections: set[_Connection] = set()

    def protocol(self) -> _Connection:
        return _Connection(self)

    async def close_all(self, timeout_s: float = 5.0) -> None:
        """The gateway stops: every connection's two TCP connections end, after what was written to them."""
        for conn in list(self.connections):
            conn.end()
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()


def _header(b0: int, length: int, mask: bytes | None) -> bytes:
    bit = MASKED if mask is not None else 0
    if length < 126:
        head = bytes((b0, bit | length))
    elif length < 1 << 16:
        head = bytes((b0, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((b0, bit | 127)) + length.to_bytes(8, "big")
    return head + mask if mask is not None else head


class _Frames(MessageCutter):
    """What the client sends, cut out of the bytes as they pass, written to the upstream (`out`), fed.

    A request is rewritten (its span ids chosen, its `traceparent` put in) and fed before it goes on."""

    __slots__ = ("conn", "feed")

    def __init__(self, conn: _Connection, feed: FrameFeed, out: asyncio.Transport) -> None:
        super().__init__(conn.relay.max_message_bytes, out, conn.relay.max_observed_bytes)
        self.conn = conn
        self.feed = feed

    def _frame(self, b0: int, mask: bytes | None, payload: bytes) -> bytes | None:
        if b0 & 0x0F >= CONTROL:
            return super()._frame(b0, mask, payload)
        if mask is not None:
            payload = apply_mask(payload, mask)
        ids = None
        new = None
        try:
            frame = parse_frame(payload)
        except FrameError:
            frame = None  # relayed as it is; the observer counts it
        if isinstance(frame, RequestFrame):
            traceparent, ids = request_ids(frame.traceparent)
            body = inject_traceparent(payload, frame, traceparent)
            assert isinstance(body, bytes)
            new = _header(b0, len(body), mask) + (apply_mask(body, mask) if mask is not None else body)
        # before it goes on: the observer sees a request before its response
        self.feed.message(self.conn.conn_id, "c2s", payload, time.time_ns(), ids)
        return new

    def _message(self, message: bytes | None) -> None:
        if message is None:
            self.feed.lost(TOO_LARGE, 1)
        else:
            self.feed.message(self.conn.conn_id, "c2s", message, time.time_ns())

    def _closing(self, payload: bytes) -> None:
        self.conn.closing(payload)


class _Connection(asyncio.Protocol):
    """One client's connection (this protocol is its TCP side) and its connection to the upstream."""

    def __init__(self, relay: ProxyRelay) -> None:
        self.relay = relay
        self.conn_id = ""
        self.state = _HANDSHAKE
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.close_code: int | None = None  # the first close frame the relay saw (client to upstream)
        self.close_reason = ""
        self.close_ns = 0  # when it passed
        self._head = bytearray()
        self._early = b""  # what the client sent after its request, before the upstream's 101
        self._c2s: _Frames | None = None
        self._s2c: FrameFeed | None = None  # the feed the upstream's bytes go to, unparsed
        self._timer: asyncio.TimerHandle | None = None
        self._connect: asyncio.Task[None] | None = None
        self._reported = False

    # --- the client's TCP connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.connections.add(self)
        self.client = cast(asyncio.Transport, transport)  # uvloop's is none of asyncio's classes
        self._timer = asyncio.get_running_loop().call_later(OPEN_TIMEOUT_S, self.client.abort)

    def data_received(self, data: bytes) -> None:
        if self.state == _OPEN:
            upstream = self.upstream
            assert upstream is not None
            if upstream.is_closing():
                return  # the upstream is gone: nothing more to deliver
            if self._c2s is None:
                upstream.write(data)
            else:
                self._c2s.received(data)
        elif self.state == _HANDSHAKE:
            self._request(data)
        elif self.state == _CONNECTING:
            self._early += data
        else:  # _REFUSED: the client answered our close frame (or sent anything): done
            assert self.client is not None
            self.client.close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost ends the upstream side

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._connect is not None:
            self._connect.cancel()
        if self.upstream is not None:
            _end(self.upstream)
        self._report_closed()

    def pause_writing(self) -> None:  # the client is slow: stop reading what the upstream sends
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.resume_reading()

    # --- the handshake -----------------------------------------------------------------------------
    def _request(self, data: bytes) -> None:
        client = self.client
        assert client is not None
        head = self._head
        head += data
        try:
            end = head_end(head)
            if end < 0:
                return
            request = parse_upgrade(bytes(head[:end]))
        except HandshakeError as exc:
            client.write(error_response(exc))
            client.close()
            self.state = _REFUSED
            return
        self._early = bytes(head[end:])
        self._head = bytearray()
        if self._timer is not None:
            self._timer.cancel()
        self.state = _CONNECTING
        client.pause_reading()
        self.conn_id = str(uuid.uuid4())
        feed = self.relay.feed
        if feed is not None:
            headers = {name: value for name in self.relay.recorded if (value := request.get(name)) is not None}
            peer = client.get_extra_info("peername")
            if peer:
                headers["x-remote-address"] = f"{peer[0]}"
            feed.opened(self.conn_id, headers)
            self._reported = True
        self._connect = asyncio.create_task(self._open(request))

    async def _open(self, request: UpgradeRequest) -> None:
        relay = self.relay
        uri = relay.uri
        client = self.client
        assert client is not None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                loop = asyncio.get_running_loop()
                transport, side = await loop.create_connection(
                    lambda: _Upstream(self), uri.host, uri.port, ssl=relay.ssl)
                self.upstream = transport
                transport.write(upstream_request(uri, request, relay.forwarded))
                head = await side.response
            status = response_status(head)
            if status != 101:
                raise UpstreamRejected(f"server rejected WebSocket connection: HTTP {status}")
        except Exception as exc:
            if self.upstream is not None:
                self.upstream.abort()
            self._unreachable(request.key, exc)
            return
        self.state = _OPEN
        client.write(head)
        feed = relay.feed
        if feed is not None:
            self._c2s = _Frames(self, feed, transport)
            self._s2c = feed
        rest, side.pending = b"".join(side.pending), []
        if rest:
            self.upstream_data(rest)
        if self._early:
            early, self._early = self._early, b""
            self.data_received(early)
        client.resume_reading()

    def _unreachable(self, key: str, exc: Exception) -> None:
        """As websockets' proxy did: accept the client, close it with 1011 and the reason, say it once."""
        relay = self.relay
        error = f"{type(exc).__name__}: {exc}"
        if relay.feed is not None:
            relay.feed.relay_error("Upstream gateway unreachable", {
                "upstream": relay.scrub(relay.upstream), "error": error})
        reason = f"upstream gateway unavailable: {type(exc).__name__} {exc}"[:120]
        self.close_code, self.close_reason, self.close_ns = 1011, reason, time.time_ns()
        self.state = _REFUSED
        client = self.client
        assert client is not None
        if not client.is_closing():
            client.write(accept_response(key) + close_frame(1011, reason))
            client.resume_reading()
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, client.close)

    # --- the upstream's side -------------------------------------------------------------------------
    def upstream_data(self, data: bytes) -> None:
        client = self.client
        assert client is not None
        if client.is_closing():
            return
        client.write(data)
        if self._s2c is not None:  # after the write: the observer cuts the messages out, not the relay
            self._s2c.stream(self.conn_id, "s2c", data, time.time_ns())

    def upstream_lost(self) -> None:
        if self.state == _OPEN and self.client is not None:
            _end(self.client)

    def closing(self, payload: bytes) -> None:
        """A close frame passed from the client: the first one's code, reason and time go to the feed, which
        weighs them against the upstream's (`UpstreamStream.first_close`)."""
        if self.close_code is None:
            self.close_code, self.close_reason = close_status(payload)
            self.close_ns = time.time_ns()

    # --- the end ------------------------------------------------------------------------------------
    def _report_closed(self) -> None:
        feed = self.relay.feed
        if self._reported and feed is not None:
            self._reported = False
            feed.closed(self.conn_id, self.close_code, self.close_reason, self.close_ns)

    def end(self) -> None:
        for transport in (self.client, self.upstream):
            if transport is not None:
                _end(transport)

    def abort(self) -> None:
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.abort()


def _end(transport: asyncio.Transport) -> None:
    """Close after what is buffered was written; cut after CLOSE_TIMEOUT_S if the peer does not take it."""
    if not transport.is_closing():
        transport.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)


class _Upstream(asyncio.Protocol):
    """The upstream's TCP side of a `_Connection`: its 101 (`response`), then its bytes for the client."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.response: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending: list[bytes] = []  # what came after the 101 before the relay opened
        self._head = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.conn.state == _OPEN:
            self.conn.upstream_data(data)
            return
        if self.response.done():
            self.pending.append(data)
            return
        head = self._head
        head += data
        try:
            end = head_end(head)
        except HandshakeError as exc:
            self.response.set_exception(UpstreamRejected(str(exc)))
            return
        if end >= 0:
            self.response.set_result(bytes(head[:end]))
            if end < len(head):
                self.pending.append(bytes(head[end:]))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.response.done():
            self.response.set_exception(ConnectionError("the upstream closed the connection during the handshake"))
        self.conn.upstream_lost()

    def pause_writing(self) -> None:  # the upstream is slow: stop reading the client
        client = self.conn.client
        if client is not None and not client.is_closing():
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self.conn.client
        if client is not None and not client.is_closing():
            client.resume_reading()


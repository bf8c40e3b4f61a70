"""The proxy's relay: WebSocket bytes between a client and the upstream gateway, on asyncio transports,
parsed only as far as the observer and the trace context need (docs/proxy-relay.md).

After the opening handshake (`_handshake`), what the upstream sends is written to the client as it
arrives; beside it, with an observer, an incremental parser cuts the messages out for the feed. What
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

try:  # websockets' C code; its pure-Python twin when the build has no extension
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

__all__ = ["ProxyRelay"]

#: Time a client has to send its upgrade request, and the upstream to answer ours (as websockets' default).
OPEN_TIMEOUT_S = 10.0
#: Time a closing side has to take what was still buffered for it before its TCP connection is cut.
CLOSE_TIMEOUT_S = 10.0
_FIN, _MASKED = 0x80, 0x80
_TEXT, _BINARY, _CLOSE, _CONTROL = 1, 2, 8, 8
_NO_STATUS, _ABNORMAL = 1005, 1006
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
    bit = _MASKED if mask is not None else 0
    if length < 126:
        head = bytes((b0, bit | length))
    elif length < 1 << 16:
        head = bytes((b0, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((b0, bit | 127)) + length.to_bytes(8, "big")
    return head + mask if mask is not None else head


class _Frames:
    """One direction's frames, cut out of the bytes as they pass, for the feed.

    c2s (`out` is the upstream): the bytes are written here; a control frame or a complete unfragmented
    data message of at most `max_observed_bytes` is held until whole (a request is rewritten), any other
    frame goes on as it comes. s2c (`out` None): the bytes were already written; this only reads them."""

    __slots__ = ("_b0", "_held", "_left", "_mask", "_need", "_parts", "_pieces", "_size", "_too_large",
                 "conn", "direction", "feed", "limit", "max_message", "out")

    def __init__(self, conn: _Connection, feed: FrameFeed, direction: str, out: asyncio.Transport | None) -> None:
        self.conn = conn
        self.feed = feed
        self.direction = direction
        self.out = out
        self.limit = conn.relay.max_observed_bytes
        self.max_message = conn.relay.max_message_bytes
        self._held: bytearray | None = None  # an incomplete header, or a frame held until whole
        self._need = 0  # bytes _held must reach
        self._left = 0  # payload bytes still to come of the frame passing through
        self._b0 = 0  # that frame's first byte, mask key and payload so far (None: not kept)
        self._mask: bytes | None = None
        self._pieces: list[bytes] | None = None
        self._parts: list[bytes] | None = None  # the data message being assembled; None between messages
        self._size = 0
        self._too_large = False

    def received(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held += data
            if len(held) < self._need:
                return
            data = bytes(held)
            self._held = None
        out: list[bytes] | None = [] if self.out is not None else None
        limit = self.limit
        n = len(data)
        pos = mark = 0  # c2s: data[mark:pos] goes on unchanged
        stop = n
        while pos < n:
            left = self._left
            if left:
                end = min(n, pos + left)
                if self._pieces is not None:
                    self._pieces.append(data[pos:end])
                self._left = left - (end - pos)
                pos = end
                if not self._left:
                    self._streamed()
                continue
            if n - pos < 2:
                stop = self._hold(data, pos, 2)
                break
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            hlen = (6 if b1 & _MASKED else 2) + (2 if length == 126 else 8 if length == 127 else 0)
            if n - pos < hlen:
                stop = self._hold(data, pos, hlen)
                break
            if length >= 126:
                length = int.from_bytes(data[pos + 2:pos + (4 if length == 126 else 10)], "big")
            mask = data[pos + hlen - 4:pos + hlen] if b1 & _MASKED else None
            opcode = b0 & 0x0F
            total = hlen + length
            whole = n - pos >= total
            if out is not None and ((opcode >= _CONTROL and length <= 125)
                                    or (b0 & _FIN and opcode in (_TEXT, _BINARY) and length <= limit)):
                if not whole:
                    stop = self._hold(data, pos, total)
                    break
                new = self._frame(b0, mask, data[pos + hlen:pos + total])
                if new is not None:
                    if pos > mark:
                        out.append(data[mark:pos])
                    out.append(new)
                    mark = pos + total
                pos += total
                continue
            if whole and out is None:
                self._frame(b0, mask, data[pos + hlen:pos + total])
                pos += total
                continue
            self._start(b0, mask, length)
            pos += hlen
            if not length:
                self._streamed()
        if out is not None and self.out is not None:
            if stop > mark:
                out.append(data if mark == 0 and stop == n else data[mark:stop])
            if out:
                self.out.write(out[0] if len(out) == 1 else b"".join(out))

    def _hold(self, data: bytes, pos: int, need: int) -> int:
        self._held = bytearray(memoryview(data)[pos:])
        self._need = need
        return pos

    def _frame(self, b0: int, mask: bytes | None, payload: bytes) -> bytes | None:
        """A frame whose payload is here whole; c2s: what goes on instead of it (None: itself)."""
        if mask is not None:
            payload = apply_mask(payload, mask)
        if b0 & 0x0F >= _CONTROL:
            if b0 & 0x0F == _CLOSE:
                self.conn.closing(payload)
            return None
        if self.out is None:
            self._data(b0, payload)
            return None
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

    def _start(self, b0: int, mask: bytes | None, length: int) -> None:
        """A frame that passes through as it comes: its payload is kept if the message is to be observed."""
        opcode = b0 & 0x0F
        size = self._size if opcode == 0 else 0
        keep = opcode < _CONTROL and not (opcode == 0 and self._too_large) and (
            self.max_message is None or size + length <= self.max_message)
        self._b0, self._mask, self._left = b0, mask, length
        self._pieces = [] if keep else None

    def _streamed(self) -> None:
        pieces = self._pieces
        self._pieces = None
        if self._b0 & 0x0F >= _CONTROL:
            return  # a control frame over 125 bytes: the receiver's to refuse
        payload = None
        if pieces is not None:
            payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if self._mask is not None:
                payload = apply_mask(payload, self._mask)
        self._data(self._b0, payload)

    def _data(self, b0: int, payload: bytes | None) -> None:
        """A data frame's payload (None: not kept, the message is too large to observe)."""
        if b0 & 0x0F:
            self._parts, self._size, self._too_large = [], 0, False
        elif self._parts is None:
            return  # a continuation of no message: the receiver's to refuse
        parts = self._parts
        if payload is None or (self.max_message is not None and self._size + len(payload) > self.max_message):
            self._too_large = True
            parts.clear()
        elif not self._too_large:
            parts.append(payload)
            self._size += len(payload)
        if b0 & _FIN:
            self._parts = None
            if self._too_large:
                self.feed.lost(TOO_LARGE, 1)
            else:
                message = parts[0] if len(parts) == 1 else b"".join(parts)
                self.feed.message(self.conn.conn_id, self.direction, message, time.time_ns())


class _Connection(asyncio.Protocol):
    """One client's connection (this protocol is its TCP side) and its connection to the upstream."""

    def __init__(self, relay: ProxyRelay) -> None:
        self.relay = relay
        self.conn_id = ""
        self.state = _HANDSHAKE
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._head = bytearray()
        self._early = b""  # what the client sent after its request, before the upstream's 101
        self._c2s: _Frames | None = None
        self._s2c: _Frames | None = None
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
            self._c2s = _Frames(self, feed, "c2s", transport)
            self._s2c = _Frames(self, feed, "s2c", None)
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
        self.close_code, self.close_reason = 1011, reason
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
        if self._s2c is not None:
            self._s2c.received(data)

    def upstream_lost(self) -> None:
        if self.state == _OPEN and self.client is not None:
            _end(self.client)

    def closing(self, payload: bytes) -> None:
        """A close frame passed (either way): the first one's code and reason are the connection's."""
        if self.close_code is None:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else _NO_STATUS
            self.close_reason = payload[2:].decode(errors="replace")

    # --- the end ------------------------------------------------------------------------------------
    def _report_closed(self) -> None:
        feed = self.relay.feed
        if self._reported and feed is not None:
            self._reported = False
            code = self.close_code if self.close_code is not None else _ABNORMAL
            feed.closed(self.conn_id, code, self.close_reason)

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


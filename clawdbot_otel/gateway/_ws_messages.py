"""WebSocket data messages cut out of one direction's bytes as they were read, wherever TCP cut them.

The relay parses what the client sends (it rewrites requests, `_proxy._Frames`); what the upstream sends
it hands over unparsed, and the observer's side cuts the messages out here (`UpstreamStream`), in the
observer process or in `LocalFeed`'s task: frame headers, fragments assembled, control frames skipped,
the first close frame's code and reason kept, a message over `max_message_bytes` reported as None.
"""

from __future__ import annotations

from typing import Protocol

try:  # websockets' C code; its pure-Python twin when the build has no extension
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

__all__ = ["ABNORMAL", "CONTROL", "MASKED", "MessageCutter", "UpstreamStream", "apply_mask", "close_status",
           "whole_frames"]

FIN, MASKED = 0x80, 0x80
TEXT, BINARY, CLOSE, CONTROL = 1, 2, 8, 8
NO_STATUS, ABNORMAL = 1005, 1006


def close_status(payload: bytes) -> tuple[int, str]:
    """A close frame's code and reason (1005: it has none)."""
    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
    return code, payload[2:].decode(errors="replace")


def whole_frames(data: bytes) -> bool:
    """Whether `data` is whole frames as a server sends them (unmasked, no extension bits, known opcodes,
    control frames short and unfragmented): where to take up a stream again that lost bytes."""
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < 2:
            return False
        b0, b1 = data[pos], data[pos + 1]
        opcode, length = b0 & 0x0F, b1 & 0x7F
        if b0 & 0x70 or b1 & MASKED or opcode in (3, 4, 5, 6, 7) or opcode > 10 or (
                opcode >= CONTROL and (length > 125 or not b0 & FIN)):
            return False
        hlen = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if n - pos < hlen:
            return False
        if length >= 126:
            length = int.from_bytes(data[pos + 2:pos + hlen], "big")
        pos += hlen + length
    return pos == n and n > 0


class Writable(Protocol):
    def write(self, data: bytes) -> None: ...


class MessageCutter:
    """One direction's frames, cut out of the bytes as they pass.

    Each data message completed goes to `_message` (None: over `max_message`), each close frame to
    `_closing`. `out` None: the bytes are only read. `out` given (the relay's client-to-upstream side): the
    bytes are written there; a control frame or a complete unfragmented data message of at most `limit`
    is held until whole and `_frame` may replace it, any other frame goes on as it comes."""

    __slots__ = ("_b0", "_held", "_left", "_mask", "_need", "_parts", "_pieces", "_size", "_too_large",
                 "limit", "max_message", "out")

    def __init__(self, max_message: int | None, out: Writable | None = None, limit: int = 0) -> None:
        self.out = out
        self.limit = limit
        self.max_message = max_message
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
        pos = mark = 0  # out: data[mark:pos] goes on unchanged
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
            hlen = (6 if b1 & MASKED else 2) + (2 if length == 126 else 8 if length == 127 else 0)
            if n - pos < hlen:
                stop = self._hold(data, pos, hlen)
                break
            if length >= 126:
                length = int.from_bytes(data[pos + 2:pos + (4 if length == 126 else 10)], "big")
            mask = data[pos + hlen - 4:pos + hlen] if b1 & MASKED else None
            opcode = b0 & 0x0F
            total = hlen + length
            whole = n - pos >= total
            # a control frame is held until whole (its close code may come in the next read), and with
            # `out` a small unfragmented data message (it may be replaced)
            if (opcode >= CONTROL and length <= 125) or (
                    out is not None and b0 & FIN and opcode in (TEXT, BINARY) and length <= limit):
                if not whole:
                    stop = self._hold(data, pos, total)
                    break
                new = self._frame(b0, mask, data[pos + hlen:pos + total])
                if new is not None and out is not None:
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
        """A frame whose payload is here whole; with `out`: what goes on instead of it (None: itself)."""
        if mask is not None:
            payload = apply_mask(payload, mask)
        if b0 & 0x0F >= CONTROL:
            if b0 & 0x0F == CLOSE:
                self._closing(payload)
            return None
        self._data(b0, payload)
        return None

    def _start(self, b0: int, mask: bytes | None, length: int) -> None:
        """A frame that passes through as it comes: its payload is kept if the message is to be observed."""
        opcode = b0 & 0x0F
        size = self._size if opcode == 0 else 0
        keep = opcode < CONTROL and not (opcode == 0 and self._too_large) and (
            self.max_message is None or size + length <= self.max_message)
        self._b0, self._mask, self._left = b0, mask, length
        self._pieces = [] if keep else None

    def _streamed(self) -> None:
        pieces = self._pieces
        self._pieces = None
        if self._b0 & 0x0F >= CONTROL:
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
        if b0 & FIN:
            self._parts = None
            self._message(None if self._too_large else parts[0] if len(parts) == 1 else b"".join(parts))

    def _message(self, message: bytes | None) -> None:
        """A data message completed (None: larger than `max_message`, not kept)."""

    def _closing(self, payload: bytes) -> None:
        """A close frame's payload."""


class UpstreamStream(MessageCutter):
    """The observer's side of one connection's upstream-to-client bytes: `cut` each read, in order.

    `close` is the first close frame's code and reason, `close_ns` the receive time of the read that held it.
    A feed that had to drop reads says so (`cut(gap=True)`): the frames are lost track of, and cutting
    starts again with the first read that is whole frames of a server's (`whole_frames`), the reads
    before it are skipped (`cut` returns None for them)."""

    __slots__ = ("_cut", "close", "close_ns", "gapped")

    def __init__(self, max_message: int | None) -> None:
        super().__init__(max_message)
        self._cut: list[bytes | None] = []
        self.close: tuple[int, str] | None = None
        self.close_ns = 0
        self.gapped = False

    def cut(self, data: bytes, received_ns: int, gap: bool = False) -> list[bytes | None] | None:
        """The messages this read completed (None in it: one too large to observe; None: the read is
        skipped, the stream lost bytes before it and is not found again yet). `gap`: reads before were lost."""
        if gap or self.gapped:
            if not whole_frames(data):
                self.gapped = True
                return None
            self.gapped = False
            self._held, self._left, self._pieces, self._parts = None, 0, None, None
        cut: list[bytes | None] = []
        self._cut = cut
        closed = self.close is not None
        self.received(data)
        if not closed and self.close is not None:
            self.close_ns = received_ns
        return cut

    def _message(self, message: bytes | None) -> None:
        self._cut.append(message)

    def _closing(self, payload: bytes) -> None:
        if self.close is None:
            self.close = close_status(payload)

    def first_close(self, code: int | None, reason: str, closed_ns: int) -> tuple[int, str]:
        """The connection's close: the first close frame either way (the relay's, client-to-upstream, passed
        at `closed_ns`, `code` None if none did; or this stream's), 1006 when neither side sent one."""
        if self.close is not None and (code is None or self.close_ns < closed_ns):
            return self.close
        return (code, reason) if code is not None else (ABNORMAL, "")

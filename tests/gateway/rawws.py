"""WebSocket ends that see frames as they are: websockets' sans-I/O protocols over plain asyncio streams
(fragments, control frames and masks included), for the relay's tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

__all__ = ["Client", "ScriptedUpstream", "Seen", "UpstreamConnection", "flush", "open_client", "scripted_upstream",
           "seen"]

Seen = tuple[Opcode, bytes, bool]  # a frame as its receiver saw it: opcode, unmasked payload, fin


def seen(frame: Frame) -> Seen:
    return frame.opcode, bytes(frame.data), frame.fin


def flush(protocol: ClientProtocol | ServerProtocol, writer: asyncio.StreamWriter) -> None:
    for data in protocol.data_to_send():
        if data:
            writer.write(data)
        elif writer.can_write_eof():
            writer.write_eof()


@dataclass
class UpstreamConnection:
    request: Request | None = None
    response_head: bytes = b""
    frames: list[Seen] = field(default_factory=list)


class ScriptedUpstream:
    """Records every frame each connection sends; on the text message `go` it sends SCRIPT."""

    SCRIPT: tuple[tuple[str, bytes, bool], ...] = (
        ("text", b'{"type":"event","event":"tick","payload":{"ts":1},"seq":1}', True),
        ("text", b'{"type":"res","id":"1","ok":true,"payload":{"protocol":4}}', True),
        ("text", b'{"type":"event",', False),  # a fragmented message
        ("cont", b'"event":"agent","payload":{"text":"' + b"y" * 200, False),
        ("cont", b'"},"seq":2}', True),
        ("binary", bytes(range(256)) * 274, True),  # 70144 bytes: a 64-bit length
        ("ping", b"srv", True),
        ("text", b'{"type":"event","event":"big","payload":"' + b"z" * 5000 + b'"}', True),
        ("text", b"done", True),
    )

    def __init__(self) -> None:
        self.connections: list[UpstreamConnection] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = UpstreamConnection()
        self.connections.append(conn)
        protocol = ServerProtocol(max_size=None)
        try:
            while data := await reader.read(65536):
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Request):
                        conn.request = event
                        protocol.send_response(protocol.accept(event))
                        conn.response_head = b"".join(protocol.data_to_send())
                        writer.write(conn.response_head)
                        continue
                    conn.frames.append(seen(event))
                    if event.opcode is Opcode.TEXT and event.data == b"go":
                        self._send_script(protocol)
                flush(protocol, writer)
            protocol.receive_eof()
        finally:
            writer.close()

    def _send_script(self, protocol: ServerProtocol) -> None:
        send = {"text": protocol.send_text, "cont": protocol.send_continuation, "binary": protocol.send_binary}
        for kind, data, fin in self.SCRIPT:
            if kind == "ping":
                protocol.send_ping(data)
            else:
                send[kind](data, fin=fin)


@contextlib.asynccontextmanager
async def scripted_upstream() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    upstream.server = await asyncio.start_server(upstream._handle, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        upstream.server.close()
        await upstream.server.wait_closed()


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: ClientProtocol
    key: str  # its Sec-WebSocket-Key
    head: bytes  # the 101 as it received it
    frames: list[Seen]  # what came with the 101


async def open_client(url: str, headers: Mapping[str, str] | None = None) -> Client:
    """A client past its handshake (the response's Sec-WebSocket-Accept checked)."""
    uri = parse_uri(url)
    reader, writer = await asyncio.open_connection(uri.host, uri.port)
    protocol = ClientProtocol(uri, max_size=None)
    request = protocol.connect()
    for name, value in (headers or {}).items():
        request.headers[name] = value
    protocol.send_request(request)
    flush(protocol, writer)
    data = b""
    while b"\r\n\r\n" not in data:
        data += await asyncio.wait_for(reader.read(65536), 10)
    protocol.receive_data(data)
    frames = [seen(e) for e in protocol.events_received() if isinstance(e, Frame)]
    assert protocol.handshake_exc is None, protocol.handshake_exc
    return Client(reader, writer, protocol, request.headers["Sec-WebSocket-Key"],
                  data[:data.index(b"\r\n\r\n") + 4], frames)

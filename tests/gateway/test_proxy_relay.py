"""The proxy's byte relay, frame by frame: one scripted session against an upstream directly and through the
proxy must give the client the identical frames (opcodes, fragments, bytes, pings, the close code and
reason) and the upstream the identical frames but for the `traceparent` of complete request messages.

Both ends are websockets' sans-I/O protocols over plain streams, so that what each receives is seen as
frames, fragments and control frames included, and the client can send what a library client rarely does
(a fragmented message with a ping between its fragments). Also: the answers the relay writes itself (no
upgrade, an unreachable upstream) and its backpressure towards a client that does not read. Each on the
standard event loop and on uvloop (what `clawdbot-otel gateway` runs on), whose transports differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.testing import capture_telemetry

from .rawws import Seen, flush, open_client, scripted_upstream, seen

pytestmark = pytest.mark.timeout(60)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
LIMIT = 1024  # the proxy's max_observed_bytes here: larger requests go on unparsed

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on a new loop of each kind, within 50 s (a hung loop defeats pytest's timeout)."""
    runner = asyncio.run if request.param == "asyncio" else uvloop.run

    def run(test: Coroutine[Any, Any, None]) -> None:
        runner(asyncio.wait_for(test, 50))

    return run


@dataclass
class Session:
    key: str  # the client's Sec-WebSocket-Key
    head: bytes  # the 101 as the client received it
    frames: list[Seen]


async def _scripted_session(url: str) -> Session:
    """What the client does: requests with and without traceparent, text that is no JSON, binary, a
    fragmented request with a ping between its fragments, a request over the observer's limit; then `go`,
    everything the upstream sends, and a close with its own code and reason."""
    client = await open_client(url, {
        "Authorization": "Bearer T",
        "X-Forwarded-For": "203.0.113.9",  # never passed upstream
        "X-Other": "not forwarded",
        "Sec-WebSocket-Extensions": "permessage-deflate",  # dropped: frames stay readable
    })
    reader, writer, protocol, frames = client.reader, client.writer, client.protocol, client.frames
    protocol.send_text(b'{"type":"req","id":"1","method":"status","params":{"probe":true}}')
    protocol.send_text(json.dumps({"type": "req", "id": "2", "method": "agent", "traceparent": CLIENT_TRACEPARENT,
                                   "params": {"message": "caf\u00e9"}}, ensure_ascii=False).encode())
    protocol.send_text("not json \u00b7".encode())
    protocol.send_binary(b"\x00\x01 binary stays binary")
    protocol.send_text(b'{"type":"req",', fin=False)
    protocol.send_ping(b"cli")
    protocol.send_continuation(b'"id":"f","method":"health"', fin=False)
    protocol.send_continuation(b"}", fin=True)
    protocol.send_text(b'{"type":"req","id":"big","method":"chat.send","params":{"m":"' + b"x" * 5000 + b'"}}')
    protocol.send_text(b"go")
    flush(protocol, writer)
    closing = False
    while data := await asyncio.wait_for(reader.read(65536), 10):
        protocol.receive_data(data)
        for event in protocol.events_received():
            assert isinstance(event, Frame)
            frames.append(seen(event))
            if event.opcode is Opcode.TEXT and event.data == b"done" and not closing:
                closing = True
                protocol.send_close(4001, "custom bye \u2713")
        flush(protocol, writer)
    protocol.receive_eof()
    writer.close()
    return Session(client.key, client.head, frames)


def test_the_relay_passes_frames_as_they_are_but_for_the_traceparent(run: Run, tmp_path: Path) -> None:
    run(_transparent(tmp_path))


async def _transparent(tmp_path: Path) -> None:
    async with scripted_upstream() as upstream:
        upstream_url = upstream.url
        direct = await _scripted_session(upstream_url)
        with capture_telemetry() as cap:
            proxy = GatewayServer(cap.telemetry, port=0, upstream=upstream.url, collectors=False,
                                  monitor_upstream=False, workspace=tmp_path, max_observed_bytes=LIMIT)
            async with proxy:
                proxied = await _scripted_session(proxy.url)
                for _ in range(200):  # the observer works from its queue
                    if len(cap.spans_by_category("request")) >= 4:
                        break
                    await asyncio.sleep(0.02)
            assert proxy.observer_errors == []
    up_direct, up_proxied = upstream.connections

    # the client: the same frames in the same order, fragments, pings, pongs and the close as they were
    assert proxied.frames == direct.frames
    assert direct.frames[-1] == (Opcode.CLOSE, (4001).to_bytes(2, "big") + "custom bye \u2713".encode(), True)
    assert (Opcode.PONG, b"cli", True) in direct.frames and (Opcode.CONT, b'"},"seq":2}', True) in direct.frames
    # ... and the upstream's own 101, byte for byte
    assert proxied.head == up_proxied.response_head

    # the upstream: the same frames, but for the traceparent of the complete requests
    assert len(up_proxied.frames) == len(up_direct.frames) == 12
    injected = {}
    for sent, got in zip(up_direct.frames, up_proxied.frames, strict=True):
        assert (sent[0], sent[2]) == (got[0], got[2])
        if sent[1].startswith(b'{"type":"req","id":"1"') or sent[1].startswith(b'{"type": "req", "id": "2"'):
            before, after = json.loads(sent[1]), json.loads(got[1])
            injected[before["id"]] = after.pop("traceparent")
            before.pop("traceparent", None)
            assert after == before
        else:
            assert got == sent  # text, binary, fragments, a ping, the large request, the close: untouched
    assert injected["2"].split("-")[1] == CLIENT_TRACE and injected["1"] != injected["2"]
    assert (Opcode.CLOSE, (4001).to_bytes(2, "big") + "custom bye \u2713".encode(), True) == up_proxied.frames[-1]

    # what went upstream of the handshake: the client's key and forwarded headers, nothing else
    assert up_proxied.request is not None and up_direct.request is not None
    headers = up_proxied.request.headers
    assert headers["Sec-WebSocket-Key"] == proxied.key
    assert headers["Authorization"] == "Bearer T"
    assert headers["Host"] == upstream_url.removeprefix("ws://")
    for name in ("X-Forwarded-For", "X-Other", "Sec-WebSocket-Extensions"):
        assert name not in headers

    # the observer saw the requests (fragmented and large ones too) and the response to "1"
    spans = {s.attributes["clawdbot.request.id"]: s for s in cap.spans_by_category("request")}
    assert set(spans) == {"1", "2", "f", "big"}
    ours = spans["2"].context
    assert injected["2"] == f"00-{ours.trace_id:032x}-{ours.span_id:016x}-01"
    assert spans["1"].attributes["clawdbot.status"] == "success"


def test_no_upgrade_is_answered_426_and_an_unreachable_upstream_closes_1011(run: Run, tmp_path: Path) -> None:
    run(_own_answers(tmp_path))


async def _own_answers(tmp_path: Path) -> None:
    with capture_telemetry() as cap:
        proxy = GatewayServer(cap.telemetry, port=0, upstream="ws://127.0.0.1:9", collectors=False,
                              monitor_upstream=False, workspace=tmp_path)
        async with proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
            assert answer.endswith(b"Failed to open a WebSocket connection: missing Connection header.\n\n"
                                   b"You cannot access a WebSocket server directly with a browser. "
                                   b"You need a WebSocket client.\n")
            session = await _unreachable_session(proxy.url)
    code, reason = int.from_bytes(session[1][:2], "big"), session[1][2:].decode()
    assert session[0] is Opcode.CLOSE and code == 1011
    assert reason.startswith("upstream gateway unavailable: ConnectionRefusedError")
    (error,) = [line for line in cap.log_lines() if line["message"] == "Upstream gateway unreachable"]
    assert error["metadata"]["upstream"] == "ws://127.0.0.1:9"


async def _unreachable_session(url: str) -> Seen:
    uri = parse_uri(url)
    reader, writer = await asyncio.open_connection(uri.host, uri.port)
    protocol = ClientProtocol(uri)
    protocol.send_request(protocol.connect())
    flush(protocol, writer)
    frames: list[Seen] = []
    while data := await asyncio.wait_for(reader.read(65536), 15):
        protocol.receive_data(data)
        frames += [seen(e) for e in protocol.events_received() if isinstance(e, Frame)]
        flush(protocol, writer)
    writer.close()
    assert protocol.handshake_exc is None  # the relay's own 101 carries a valid Sec-WebSocket-Accept
    (frame,) = frames
    return frame


def test_a_client_that_does_not_read_stops_the_upstream_not_fills_the_proxy(run: Run, tmp_path: Path) -> None:
    run(_backpressure(tmp_path))


async def _backpressure(tmp_path: Path) -> None:
    total = 96  # messages of 1 MiB the upstream tries to send
    chunk = bytes(range(256)) * 4096
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        protocol = ServerProtocol(max_size=None)
        protocol.receive_data(await reader.readuntil(b"\r\n\r\n"))
        (request,) = protocol.events_received()
        assert isinstance(request, Request)
        protocol.send_response(protocol.accept(request))
        flush(protocol, writer)
        with contextlib.suppress(ConnectionError):
            for _ in range(total):
                protocol.send_binary(chunk)
                flush(protocol, writer)
                await writer.drain()  # blocks while the proxy does not read
                sent += 1
        writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    upstream_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    with capture_telemetry() as cap:
        proxy = GatewayServer(cap.telemetry, port=0, upstream=upstream_url, collectors=False,
                              monitor_upstream=False, workspace=tmp_path)
        async with proxy:
            uri = parse_uri(proxy.url)
            reader, writer = await asyncio.open_connection(uri.host, uri.port, limit=1 << 20)
            protocol = ClientProtocol(uri, max_size=None)
            protocol.send_request(protocol.connect())
            flush(protocol, writer)
            await asyncio.sleep(1.5)  # the client reads nothing meanwhile
            assert proxy._relay is not None
            (conn,) = proxy._relay.connections
            assert conn.client is not None and conn.upstream is not None
            buffered = conn.client.get_write_buffer_size() + conn.upstream.get_write_buffer_size()
            stalled_at = sent
            assert buffered < 2 << 20  # what the proxy holds: about one read past the high-water mark
            assert stalled_at < total // 2  # the upstream was made to wait, not the proxy to buffer
            received = 0
            while received < total:  # now the client reads: every message arrives, whole
                protocol.receive_data(await asyncio.wait_for(reader.read(1 << 20), 10))
                for event in protocol.events_received():
                    if isinstance(event, Frame):
                        assert event.data == chunk
                        received += 1
            writer.close()
    server.close()
    await server.wait_closed()
    assert sent == total


async def test_messages_over_max_size_are_relayed_and_counted_not_observed(tmp_path: Path) -> None:
    async with scripted_upstream() as upstream:
        direct = await _scripted_session(upstream.url)
        with capture_telemetry() as cap:
            proxy = GatewayServer(cap.telemetry, port=0, upstream=upstream.url, collectors=False,
                                  monitor_upstream=False, workspace=tmp_path, max_observed_bytes=LIMIT, max_size=4096)
            async with proxy:
                proxied = await _scripted_session(proxy.url)
                await asyncio.sleep(0.2)
    assert proxied.frames == direct.frames  # the relay refuses nothing
    assert len(upstream.connections[1].frames) == len(upstream.connections[0].frames)
    # the 5000-byte request, the 5000-byte event and the 70144-byte binary message: not assembled
    lost = {p.attributes["reason"]: p.value for p in cap.metric_points("clawdbot_otel.source_errors")}
    assert lost["message_too_large"] == 3
    assert {s.attributes["clawdbot.request.id"] for s in cap.spans_by_category("request")} == {"1", "2", "f"}


@pytest.mark.parametrize(("first", "observed"), [
    ("upstream", (4100, "upstream bye")),  # the client echoes it
    ("upstream, then drop", (4100, "upstream bye")),  # no echo gets through: only the upstream's bytes tell
    ("client", (4000, "client bye")),
    ("drop", (1006, "")),  # the upstream's TCP connection cut without a close frame
])
def test_the_observer_is_told_the_first_close_frame_either_way(
        run: Run, tmp_path: Path, first: str, observed: tuple[int, str]) -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    async def upstream_handler(ws: ServerConnection) -> None:
        async for _ in ws:
            if first == "upstream":
                await ws.close(4100, "upstream bye")
            elif first == "upstream, then drop":
                ws.protocol.send_close(4100, "upstream bye")
                for data in ws.protocol.data_to_send():
                    ws.transport.write(data)
                ws.transport.close()
            elif first == "drop":
                ws.transport.abort()
            return

    async def test() -> None:
        with capture_telemetry(strict=False) as cap:
            async with serve(upstream_handler, "127.0.0.1", 0, compression=None) as upstream:
                port = next(iter(upstream.sockets)).getsockname()[1]
                server = GatewayServer(cap.telemetry, port=0, upstream=f"ws://127.0.0.1:{port}",
                                       monitor_upstream=False, collectors=False, workspace=tmp_path)
                assert server.observer is not None
                closes: list[tuple[int | None, str]] = []
                told = server.observer.connection_closed

                def connection_closed(conn_id: str, code: int | None = None, reason: str = "") -> None:
                    closes.append((code, reason))
                    told(conn_id, code, reason)

                server.observer.connection_closed = connection_closed  # type: ignore[method-assign]
                async with server:
                    async with connect(server.url, compression=None) as client:
                        await client.send('{"type":"event","event":"hi"}')
                        if first == "client":
                            await client.close(4000, "client bye")
                        else:
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(client.recv(), 5)
                    for _ in range(200):
                        if closes:
                            break
                        await asyncio.sleep(0.01)
                assert closes == [observed]
                assert server.observer_errors == []

    run(test())

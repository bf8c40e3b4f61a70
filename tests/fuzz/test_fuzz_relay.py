"""The proxy relays every frame byte for byte (request frames gain only their `traceparent`), whatever the
frames are: JSON of any shape, text that is no JSON, binary messages, requests with odd trace fields; and
however TCP cuts the client's frames (fragments, pings, large requests, the close)."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from clawdbot_otel.frames import FrameError, RequestFrame, parse_frame
from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.gateway._ws_messages import UpstreamStream
from clawdbot_otel.testing import capture_telemetry
from tests.gateway.rawws import Seen, open_client, scripted_upstream

pytestmark = pytest.mark.timeout(300)

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8)
trace_fields = st.one_of(st.just(_TRACEPARENT), st.text(max_size=60), json_values)


_PLACEHOLDER = "\u2063placeholder\u2063"


@st.composite
def requests(draw: st.DrawFn) -> str | bytes:
    frame: dict[str, Any] = {"type": "req", "id": draw(st.text(min_size=1, max_size=20)),
                             "method": draw(st.text(min_size=1, max_size=20))}
    top = draw(st.one_of(st.none(), trace_fields))
    if top is not None:
        frame["traceparent"] = top
    nested = st.fixed_dictionaries({"traceparent": st.just(top) if top is not None else trace_fields})
    params = draw(st.one_of(st.none(), json_values, nested, st.fixed_dictionaries({"traceparent": trace_fields})))
    if params is not None:
        frame["params"] = params
    escaped = isinstance(top, str) and draw(st.booleans())  # the top-level value written with \u escapes
    if escaped:
        frame["traceparent"] = _PLACEHOLDER
    items = list(frame.items())
    order = draw(st.permutations(range(len(items))))
    text = json.dumps(dict(items[i] for i in order), ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 2])), separators=draw(st.sampled_from([None, (",", ":")])))
    if escaped:
        placeholder = json.dumps(_PLACEHOLDER, ensure_ascii=False)
        text = text.replace(placeholder, json.dumps(top).replace("0", "\\u0030")).replace(
            json.dumps(_PLACEHOLDER), json.dumps(top).replace("0", "\\u0030"))
    return text.encode() if draw(st.booleans()) else text


messages = st.one_of(requests(), st.text(max_size=60), st.binary(max_size=60),
                     json_values.map(json.dumps), json_values.map(lambda v: json.dumps(v).encode()))


async def _relay(tmp: Path, c2s: list[str | bytes], s2c: list[str | bytes]) -> tuple[list[Any], list[Any]]:
    at_upstream: list[str | bytes] = []
    upstream_conn: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def upstream_handler(ws: ServerConnection) -> None:
        upstream_conn.set_result(ws)
        async for message in ws:
            at_upstream.append(message)

    with capture_telemetry(strict=False) as cap:
        async with serve(upstream_handler, "127.0.0.1", 0, compression=None) as upstream:
            port = next(iter(upstream.sockets)).getsockname()[1]
            server = GatewayServer(cap.telemetry, port=0, upstream=f"ws://127.0.0.1:{port}", monitor_upstream=False,
                                   collectors=False, workspace=tmp)
            async with server, connect(server.url, compression=None, max_size=None) as client:
                ws = await asyncio.wait_for(upstream_conn, 5)
                for message in c2s:
                    await client.send(message)
                for message in s2c:
                    await ws.send(message)
                at_client = [await asyncio.wait_for(client.recv(), 5) for _ in s2c]
                for _ in range(500):
                    if len(at_upstream) >= len(c2s):
                        break
                    await asyncio.sleep(0.01)
                assert server.observer_errors == []
    return at_upstream, at_client


def _with_traceparent(message: str | bytes) -> dict[str, Any] | None:
    """The JSON a request frame must arrive as (its own fields, a new traceparent), or None if no request."""
    try:
        frame = parse_frame(message)
    except FrameError:
        return None
    if not isinstance(frame, RequestFrame):
        return None
    return {**json.loads(message), "traceparent": None}


@given(st.lists(messages, max_size=8), st.lists(messages, max_size=6))
def test_the_relay_forwards_every_frame_byte_for_byte(tmp_path: Path, c2s: list[str | bytes],
                                                      s2c: list[str | bytes]) -> None:
    at_upstream, at_client = asyncio.run(_relay(tmp_path, c2s, s2c))
    assert at_client == s2c  # same bytes, same message type (text stays str, binary stays bytes)
    assert len(at_upstream) == len(c2s)
    for sent, arrived in zip(c2s, at_upstream, strict=True):
        assert type(arrived) is type(sent)
        expected = _with_traceparent(sent)
        if expected is None:
            assert arrived == sent
            continue
        got = json.loads(arrived)
        assert isinstance(got.get("traceparent"), str) and got["traceparent"].startswith("00-")
        assert {**got, "traceparent": None} == expected  # every other field as sent, nested ones too


# --- the byte relay's frame parser: any frames, cut anywhere by TCP -------------------------------------------
_LIMIT = 256  # max_observed_bytes here: larger requests pass unparsed
frame_plans = st.lists(st.one_of(
    st.tuples(st.just("message"), messages, st.integers(min_value=1, max_value=3)),  # in 1 to 3 fragments
    st.tuples(st.just("message"), requests(), st.just(1)),
    st.tuples(st.just("large"), st.integers(min_value=_LIMIT, max_value=70_000), st.just(1)),
    st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
), min_size=1, max_size=8)


def _send_plan(protocol: ClientProtocol, plan: list[tuple[str, Any, int]]) -> list[Seen]:
    """Queue the plan's frames on the client; what the upstream must receive, request bodies as JSON."""
    expected: list[Seen] = []
    for kind, value, fragments in plan:
        if kind == "ping":
            protocol.send_ping(value)
            expected.append((Opcode.PING, value, True))
            continue
        if kind == "large":
            value = json.dumps({"type": "req", "id": "L", "method": "x", "params": "p" * value})
        data = value.encode() if isinstance(value, str) else value
        opcode = Opcode.TEXT if isinstance(value, str) else Opcode.BINARY
        cuts = [len(data) * i // fragments for i in range(fragments + 1)]
        for i in range(fragments):
            part, fin = data[cuts[i]:cuts[i + 1]], i == fragments - 1
            if i == 0:
                (protocol.send_text if opcode is Opcode.TEXT else protocol.send_binary)(part, fin=fin)
            else:
                protocol.send_continuation(part, fin=fin)
            expected.append((opcode if i == 0 else Opcode.CONT, part, fin))
    return expected


async def _through_the_byte_relay(tmp: Path, plan: list[tuple[str, Any, int]], cuts: list[int]) -> None:
    async with scripted_upstream() as upstream:
        with capture_telemetry(strict=False) as cap:
            server = GatewayServer(cap.telemetry, port=0, upstream=upstream.url, monitor_upstream=False,
                                   collectors=False, workspace=tmp, max_observed_bytes=_LIMIT)
            async with server:
                client = await open_client(server.url)
                expected = _send_plan(client.protocol, plan)
                client.protocol.send_close(4321, "fuzz")
                stream = b"".join(client.protocol.data_to_send())
                bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
                for start, end in itertools.pairwise(bounds):  # each piece its own TCP segment, mostly
                    client.writer.write(stream[start:end])
                    await client.writer.drain()
                    await asyncio.sleep(0.001)
                while await asyncio.wait_for(client.reader.read(65536), 10):
                    pass  # until the upstream's echo of the close and the end
                client.writer.close()
            assert server.observer_errors == []
    (conn,) = upstream.connections
    expected.append((Opcode.CLOSE, (4321).to_bytes(2, "big") + b"fuzz", True))
    assert len(conn.frames) == len(expected)
    for want, got in zip(expected, conn.frames, strict=True):
        assert (got[0], got[2]) == (want[0], want[2])
        single = want[0] in (Opcode.TEXT, Opcode.BINARY) and want[2] and len(want[1]) <= _LIMIT
        if single and _with_traceparent(want[1]) is not None:  # a request: only its traceparent is new
            arrived = json.loads(got[1])
            assert isinstance(arrived.get("traceparent"), str) and arrived["traceparent"].startswith("00-")
            assert {**arrived, "traceparent": None} == _with_traceparent(want[1])
        else:
            assert got[1] == want[1]


@given(frame_plans, st.lists(st.integers(min_value=0), min_size=2, max_size=16))
def test_the_byte_relay_parses_frames_cut_anywhere(tmp_path: Path, plan: list[tuple[str, Any, int]],
                                                   cuts: list[int]) -> None:
    asyncio.run(_through_the_byte_relay(tmp_path, plan, cuts))


# --- the observer's side: the upstream's bytes as the relay read them, cut anywhere -----------------------------
_MAX_MESSAGE = 300  # max_message_bytes here: larger messages are counted, not cut out
upstream_plans = st.lists(st.one_of(
    st.tuples(st.just("message"), messages, st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("large"), st.integers(min_value=_MAX_MESSAGE + 1, max_value=70_000), st.integers(1, 2)),
    st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
), max_size=8)


@given(upstream_plans, st.one_of(st.none(), st.tuples(st.sampled_from([1000, 1001, 1011, 3000, 4321]), st.text(max_size=20))),
       st.lists(st.integers(min_value=0), max_size=16))
def test_the_observer_cuts_the_upstreams_messages_out_of_reads_cut_anywhere(
        plan: list[tuple[str, Any, int]], close: tuple[int, str] | None, cuts: list[int]) -> None:
    protocol = ServerProtocol(max_size=None)
    protocol.state = State.OPEN
    expected: list[bytes | None] = []
    for kind, value, fragments in plan:
        if kind == "ping":
            protocol.send_ping(value)
            continue
        data = b"x" * value if kind == "large" else value.encode() if isinstance(value, str) else value
        binary = kind == "large" or isinstance(value, bytes)
        bounds = [len(data) * i // fragments for i in range(fragments + 1)]
        for i in range(fragments):
            part, fin = data[bounds[i]:bounds[i + 1]], i == fragments - 1
            if i:
                protocol.send_continuation(part, fin=fin)
            else:
                (protocol.send_binary if binary else protocol.send_text)(part, fin=fin)
        expected.append(None if len(data) > _MAX_MESSAGE else data)
    if close is not None:
        protocol.send_close(*close)
    stream = b"".join(protocol.data_to_send())
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    upstream = UpstreamStream(_MAX_MESSAGE)
    cut: list[bytes | None] = []
    close_read = None
    for read, (start, end) in enumerate(itertools.pairwise(bounds)):
        cut += upstream.cut(stream[start:end], 100 + read)
        if close is not None and close_read is None and end == len(stream):
            close_read = 100 + read  # the read that held the close frame's last byte
    assert cut == expected
    assert upstream.close == close
    if close is not None:
        assert upstream.close_ns == close_read
        assert upstream.first_close(4999, "client", close_read + 1) == close  # the upstream's came first
        assert upstream.first_close(1001, "client", close_read - 1) == (1001, "client")
    assert upstream.first_close(None, "", 0) == (close if close is not None else (1006, ""))


def test_after_lost_reads_the_observer_takes_the_stream_up_at_the_next_read_of_whole_frames() -> None:
    protocol = ServerProtocol(max_size=None)
    protocol.state = State.OPEN
    reads = []
    for text in (b'{"n":1}', b"y" * 200, b'{"n":3}', b'{"n":4}'):
        protocol.send_text(text)
        reads.append(b"".join(protocol.data_to_send()))
    first, large, third, fourth = reads
    upstream = UpstreamStream(None)
    assert upstream.cut(first, 1) == [b'{"n":1}']
    # the large frame's header and start were lost: its rest is no frame, then whole frames again
    assert upstream.cut(large[100:], 2, gap=True) is None
    assert upstream.cut(third + fourth[:3], 3) is None  # it ends in the middle of a frame: not yet
    assert upstream.cut(fourth[3:], 4) is None  # a frame's rest
    protocol.send_close(1001, "going away")
    assert upstream.cut(fourth + b"".join(protocol.data_to_send()), 5) == [b'{"n":4}']
    assert (upstream.close, upstream.close_ns) == ((1001, "going away"), 5)

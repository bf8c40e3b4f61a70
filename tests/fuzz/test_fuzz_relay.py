"""The proxy relays every frame byte for byte (request frames gain only their `traceparent`), whatever the
frames are: JSON of any shape, text that is no JSON, binary messages, requests with odd trace fields."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from clawdbot_otel.frames import FrameError, RequestFrame, parse_frame
from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.testing import capture_telemetry

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

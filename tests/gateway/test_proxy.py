"""The proxy: client -> our gateway (--upstream) -> a recording tap -> an embedded gateway as the upstream.

The tap sees exactly what the proxy sent upstream and what the upstream answered, so every byte of
every frame can be compared in both directions; two Telemetry instances (one per gateway) show that
the upstream's spans join the client's trace through the injected `traceparent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from clawdbot_otel.frames import frame_from_dict
from clawdbot_otel.gateway import GatewayServer, inject_traceparent
from clawdbot_otel.testing import Capture, capture_telemetry

pytestmark = pytest.mark.timeout(60)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


class Tap:
    """A recording relay: what passes through it, in order, with the close code the client side got."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.c2s: list[str | bytes] = []
        self.s2c: list[str | bytes] = []
        self.client_close: tuple[int | None, str | None] | None = None
        self.server: Server | None = None

    async def _handle(self, ws: ServerConnection) -> None:
        async with connect(self.upstream, max_size=None, compression=None) as up:
            async def pump(src: Any, dst: Any, log: list[str | bytes]) -> None:
                try:
                    async for message in src:
                        log.append(message)
                        await dst.send(message)
                except ConnectionClosed:
                    pass

            a = asyncio.create_task(pump(ws, up, self.c2s))
            b = asyncio.create_task(pump(up, ws, self.s2c))
            await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
            if up.close_code is not None and ws.close_code is None:  # relay the upstream's close
                await ws.close(up.close_code, up.close_reason or "")
            self.client_close = (ws.close_code, ws.close_reason)
            for task in (a, b):
                task.cancel()

    async def __aenter__(self) -> Tap:
        self.server = await serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"


@contextlib.asynccontextmanager
async def _chain(tmp_path: Path, **proxy_options: Any) -> AsyncIterator[tuple[GatewayServer, Capture, Capture, Tap]]:
    """client -> proxy -> tap -> embedded upstream, each gateway with its own capture."""
    # the upstream's ids must not coincide with the proxy's incremental ones
    with capture_telemetry() as cap_proxy, capture_telemetry(id_generator=RandomIdGenerator()) as cap_up:
        upstream = GatewayServer(cap_up.telemetry, port=0, workspace=tmp_path / "up", token="T", time_scale=0.01,
                                 tick_interval_s=3600, cron_jobs=(), seed=1, collectors=False)
        async with upstream, Tap(upstream.url) as tap:
            # the liveness probe has its own test: here the tap must see the client's frames only
            proxy = GatewayServer(cap_proxy.telemetry, port=0, upstream=tap.url, collectors=False,
                                  monitor_upstream=False, **proxy_options)
            async with proxy:
                yield proxy, cap_proxy, cap_up, tap
            assert proxy.observer_errors == []
        assert upstream.observer_errors == []


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[tuple[GatewayServer, Capture, Capture, Tap]]:
    async with _chain(tmp_path) as parts:
        yield parts


async def _until(ws: ClientConnection, got: list[str | bytes], pred: Any) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.recv(), 10)
        got.append(message)
        try:
            frame = json.loads(message)
        except ValueError:
            continue
        if pred(frame):
            return frame  # type: ignore[no-any-return]


@pytest.fixture
def trace_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The design's policy, a span per request: successful health requests are traced too."""
    monkeypatch.setenv("CLAWDBOT_OTEL_UNTRACED_METHODS", "")


async def test_proxy_is_transparent_and_joins_the_trace(
    trace_every_request: None, chain: tuple[GatewayServer, Capture, Capture, Tap],
) -> None:
    proxy, cap_proxy, cap_up, tap = chain
    sent: list[str | bytes] = []
    got: list[str | bytes] = []
    async with connect(proxy.url, max_size=None, compression=None) as ws:
        await _until(ws, got, lambda f: f.get("event") == "connect.challenge")
        # spaced JSON (not our encoder's), unicode, key order: all must survive byte for byte
        messages: list[str | bytes] = [
            json.dumps({"type": "req", "id": "1:c", "method": "connect", "params": {
                "minProtocol": 4, "maxProtocol": 4, "client": {"id": "cli", "mode": "cli"}, "auth": {"token": "T"},
                "role": "operator", "scopes": ["operator.write"]}}),
            json.dumps({"type": "req", "id": "2:a", "method": "agent", "traceparent": CLIENT_TRACEPARENT,
                        "params": {"message": "please use a tool now \u00b7 caf\u00e9", "agentId": "main",
                                   "idempotencyKey": "run-proxy-1", "timeout": 60}}, ensure_ascii=False),
            '{"type":"req","id":"3:h","method":"health"}  ',
            b"\x00\x01 binary stays binary",
            '{"id": "4:x", "method": "health"}',
        ]
        sent.append(messages[0])
        await ws.send(messages[0])
        await _until(ws, got, lambda f: f.get("id") == "1:c")
        sent.append(messages[1])
        await ws.send(messages[1])
        await _until(ws, got, lambda f: f.get("id") == "2:a" and f.get("payload", {}).get("status") == "ok")
        for message in messages[2:]:
            sent.append(message)
            await ws.send(message)
        await _until(ws, got, lambda f: f.get("id") == "3:h")
        await _until(ws, got, lambda f: f.get("ok") is False and f.get("id") == "")  # the binary frame
        await _until(ws, got, lambda f: f.get("ok") is False and f.get("id") == "4:x")
        await ws.close(4000, "bye now")
    for _ in range(100):
        if tap.client_close is not None:
            break
        await asyncio.sleep(0.02)

    # s2c: every message byte-identical, same order, same type
    assert got == tap.s2c
    # c2s: identical except the traceparent of req frames
    assert len(tap.c2s) == len(sent)
    assert tap.c2s[3] == sent[3] and isinstance(tap.c2s[3], bytes)
    assert tap.c2s[4] == sent[4]  # not a req frame (no type): passed on untouched
    injected: list[str] = []
    for before, after in zip(sent[:3], tap.c2s[:3], strict=True):
        assert isinstance(after, str) and isinstance(before, str)
        tp = json.loads(after)["traceparent"]
        injected.append(tp)
        if "traceparent" in json.loads(before):
            assert after == before.replace(CLIENT_TRACEPARENT, tp)
        else:
            end = before.rstrip().rfind("}")
            assert after == f'{before[:end]},"traceparent":"{tp}"{before[end:]}'
    assert tap.client_close == (4000, "bye now")

    # traces: the proxy's request span is the parent of the upstream's
    await asyncio.sleep(0.1)
    proxy_requests = {s.attributes["clawdbot.request.id"]: s for s in cap_proxy.spans_by_category("request")}
    up_requests = {s.attributes["clawdbot.request.id"]: s for s in cap_up.spans_by_category("request")}
    for frame_id, tp in zip(("1:c", "2:a", "3:h"), injected, strict=True):
        ours, theirs = proxy_requests[frame_id], up_requests[frame_id]
        # the relay chose the ids before the span existed: the span has exactly those (sampled; the
        # random-trace-id flag as the SDK sets it for a root span, as the client sent it otherwise)
        assert tp == f"00-{ours.context.trace_id:032x}-{ours.context.span_id:016x}-{int(ours.context.trace_flags):02x}"
        assert ours.context.trace_flags.sampled
        assert theirs.parent is not None and theirs.parent.span_id == ours.context.span_id
        assert theirs.context.trace_id == ours.context.trace_id
    agent = proxy_requests["2:a"]
    assert f"{agent.context.trace_id:032x}" == CLIENT_TRACE
    assert agent.parent is not None and agent.parent.span_id == 0x00F067AA0BA902B7
    # the run's spans on both sides are in the client's trace
    for cap in (cap_proxy, cap_up):
        (session,) = cap.spans_by_category("session")
        assert f"{session.context.trace_id:032x}" == CLIENT_TRACE
        assert all(f"{s.context.trace_id:032x}" == CLIENT_TRACE for s in cap.spans_by_category("tool_call"))
    # proxy-side metrics: the same requests, auth observed from hello-ok
    requests = {(p.attributes["method"], p.attributes["status"]): p.value for p in cap_proxy.metric_points(
        "gateway.requests")}
    assert requests[("agent", "success")] == 1 and requests[("connect", "success")] == 1
    audit = [line for line in cap_proxy.log_lines() if line["component"] == "audit"]
    assert len(audit) == 1 and audit[0]["message"] == "auth.success"


async def test_proxy_relays_auth_failure_and_close(chain: tuple[GatewayServer, Capture, Capture, Tap]) -> None:
    proxy, cap_proxy, _cap_up, _tap = chain
    async with connect(proxy.url, compression=None) as ws:
        got: list[str | bytes] = []
        await _until(ws, got, lambda f: f.get("event") == "connect.challenge")
        await ws.send(json.dumps({"type": "req", "id": "1", "method": "connect",
                                  "params": {"minProtocol": 4, "maxProtocol": 4, "auth": {"token": "nope"}}}))
        res = await _until(ws, got, lambda f: f.get("id") == "1")
        assert res["ok"] is False
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008  # the upstream's close code, relayed
    await asyncio.sleep(0.1)
    errors = {p.attributes["error_type"]: p.value for p in cap_proxy.metric_points("gateway.errors")}
    assert errors == {"auth": 1}
    audit = [line for line in cap_proxy.log_lines() if line["component"] == "audit"]
    assert [line["message"] for line in audit] == ["auth.failure"]


async def test_upstream_down_closes_with_1011(tmp_path: Path) -> None:
    with capture_telemetry() as cap:
        proxy = GatewayServer(cap.telemetry, port=0, upstream="ws://127.0.0.1:9", collectors=False,
                              monitor_upstream=False)
        async with proxy, connect(proxy.url) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
            assert ws.close_code == 1011
        assert {p.attributes["error_type"]: p.value for p in cap.metric_points("gateway.errors")} == {"runtime": 1}


def test_inject_traceparent_edge_cases() -> None:
    tp = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    text = '{"type":"req","id":"1","method":"x","params":{"note":"\\"traceparent\\":\\"old\\""},"traceparent":"old"}'
    frame = frame_from_dict(json.loads(text))
    out = inject_traceparent(text, frame, tp)  # type: ignore[arg-type]
    assert json.loads(out)["traceparent"] == tp and json.loads(out)["params"] == json.loads(text)["params"]
    weird = '{"type":"req","id":"1","method":"x","traceparent":null}'
    out = inject_traceparent(weird, frame_from_dict(json.loads(weird)), tp)  # type: ignore[arg-type]
    assert json.loads(out) == {"type": "req", "id": "1", "method": "x", "traceparent": tp}
    as_bytes = inject_traceparent(b'{"type":"req","id":"1","method":"x"}', frame_from_dict(
        {"type": "req", "id": "1", "method": "x"}), tp)  # type: ignore[arg-type]
    assert as_bytes == b'{"type":"req","id":"1","method":"x","traceparent":"' + tp.encode() + b'"}'


async def test_large_frames_are_observed_off_the_event_loop(tmp_path: Path) -> None:
    # Every frame above max_observed_bytes is parsed in a worker thread: the run is still observed whole.
    with capture_telemetry() as cap_proxy, capture_telemetry(strict=False) as cap_up:
        upstream = GatewayServer(cap_up.telemetry, port=0, workspace=tmp_path / "up", token="T", time_scale=0.01,
                                 tick_interval_s=3600, cron_jobs=(), seed=1, collectors=False)
        async with upstream:
            proxy = GatewayServer(cap_proxy.telemetry, port=0, upstream=upstream.url, collectors=False,
                                  monitor_upstream=False, max_observed_bytes=64)
            async with proxy, connect(proxy.url, max_size=None) as ws:
                got: list[str | bytes] = []
                await _until(ws, got, lambda f: f.get("event") == "connect.challenge")
                await ws.send(json.dumps({"type": "req", "id": "1", "method": "connect", "params": {
                    "minProtocol": 4, "maxProtocol": 4, "client": {"id": "cli", "mode": "cli"},
                    "auth": {"token": "T"}, "role": "operator", "scopes": ["operator.write"]}}))
                await _until(ws, got, lambda f: f.get("id") == "1")
                await ws.send(json.dumps({"type": "req", "id": "2", "method": "agent", "params": {
                    "message": "please use a tool now " + "x" * 200, "agentId": "main", "idempotencyKey": "big-1"}}))
                await _until(ws, got, lambda f: f.get("id") == "2" and f.get("payload", {}).get("status") == "ok")
            assert proxy.observer_errors == []
    (session,) = cap_proxy.spans_by_category("session")
    assert session.attributes["gen_ai.usage.output_tokens"] > 0
    assert cap_proxy.spans_by_category("tool_call")
    agent = next(s for s in cap_proxy.spans_by_category("request") if s.attributes["rpc.method"] == "agent")
    assert agent.attributes["clawdbot.status"] == "success"
    assert session.parent is not None and session.parent.span_id == agent.context.span_id


async def test_a_full_observer_queue_costs_telemetry_never_traffic(tmp_path: Path) -> None:
    async with _chain(tmp_path, max_observe_queue=3) as (proxy, cap_proxy, _cap_up, tap):
        assert proxy._feed_task is not None
        proxy._feed_task.cancel()  # stall the observer: nothing drains its queue
        await _ten_health_requests_all_answered(proxy, tap)
        dropped = {p.attributes["reason"]: p.value for p in cap_proxy.metric_points("clawdbot_otel.source_errors")}
        assert dropped["observer_queue_full"] >= 8


async def _ten_health_requests_all_answered(proxy: GatewayServer, tap: Tap) -> None:
    async with connect(proxy.url, compression=None) as ws:
        got: list[str | bytes] = []
        await _until(ws, got, lambda f: f.get("event") == "connect.challenge")
        await ws.send(json.dumps({"type": "req", "id": "1", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4, "client": {"id": "cli", "mode": "cli"}, "auth": {"token": "T"},
            "role": "operator", "scopes": ["operator.write"]}}))
        await _until(ws, got, lambda f: f.get("id") == "1")
        for i in range(10):
            await ws.send(json.dumps({"type": "req", "id": f"h{i}", "method": "health"}))
        for i in range(10):
            await _until(ws, got, lambda f, i=i: f.get("id") == f"h{i}")  # every answer arrives
    assert got == tap.s2c

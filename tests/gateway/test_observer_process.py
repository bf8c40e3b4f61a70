"""The proxy's observer process (`clawdbot-otel gateway --upstream`): the relay hands every frame to a child
process that runs the observer and the SDK; what it exports (OTLP-JSON files here) is what is checked.

client -> proxy (observer_process=True) -> embedded upstream with its own in-memory capture, so that the
upstream's request spans show the traceparent the relay injected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from websockets.asyncio.client import connect

from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.gateway._relay import request_ids
from clawdbot_otel.simulation import GatewayClient
from clawdbot_otel.testing import Capture, capture_telemetry

pytestmark = pytest.mark.timeout(90)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the observer process (which reads this environment) writes its OTLP-JSON files."""
    import os

    for key in list(os.environ):
        if key.startswith(("OTEL_", "CLAWDBOT_OTEL_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CLAWDBOT_OTEL_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("CLAWDBOT_OTEL_STRICT", "1")  # an observer error in the child would raise, and show
    return tmp_path / "out"


@contextlib.asynccontextmanager
async def _proxy(tmp_path: Path) -> AsyncIterator[tuple[GatewayServer, Capture]]:
    with capture_telemetry(id_generator=RandomIdGenerator()) as cap_up, capture_telemetry() as unused:
        upstream = GatewayServer(cap_up.telemetry, port=0, workspace=tmp_path / "up", token="T", time_scale=0.01,
                                 tick_interval_s=3600, cron_jobs=(), seed=1, collectors=False)
        async with upstream:
            proxy = GatewayServer(unused.telemetry, port=0, upstream=upstream.url, upstream_token="T",
                                  collectors=False, monitor_upstream=False, observer_process=True)
            assert proxy.process_feed is not None
            proxy.process_feed.restart_delay_s = 0.2
            await proxy.start()
            try:
                yield proxy, cap_up
            finally:
                await proxy.stop()
        assert unused.finished_spans() == [], "the relay's process made spans"
        assert unused.collect_metrics() == {}, "the relay's process counted"


def _otlp(path: Path, *keys: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        level: list[Any] = [json.loads(line)]
        for key in keys:
            level = [item for parent in level for item in parent[key]]
        items += level
    return items


def _counter(out: Path, name: str) -> dict[tuple[tuple[str, str], ...], int]:
    """A cumulative counter's totals by attributes, added up over the processes that exported it."""
    last: dict[tuple[Any, ...], int] = {}
    for metric in _otlp(out / "metrics.jsonl", "resourceMetrics", "scopeMetrics", "metrics"):
        if metric["name"] != name:
            continue
        for point in metric["sum"]["dataPoints"]:
            attrs = tuple(sorted((a["key"], a["value"]["stringValue"]) for a in point["attributes"]))
            key = (point["startTimeUnixNano"], attrs)  # one series per process (its own start)
            last[key] = max(last.get(key, 0), int(point["asInt"]))
    totals: dict[tuple[tuple[str, str], ...], int] = {}
    for (_start, attrs), value in last.items():
        totals[attrs] = totals.get(attrs, 0) + value
    return totals


def _request_spans(out: Path) -> list[dict[str, Any]]:
    spans = _otlp(out / "traces.jsonl", "resourceSpans", "scopeSpans", "spans")
    return [s for s in spans if {"key": "clawdbot.span.category", "value": {"stringValue": "request"}}
            in s["attributes"]]


def _hex(otlp_json_id: str) -> str:
    return base64.b64decode(otlp_json_id).hex()  # the protobuf JSON mapping writes bytes as base64


def _method(span: dict[str, Any]) -> str:
    return next(a["value"]["stringValue"] for a in span["attributes"] if a["key"] == "rpc.method")


async def _health(url: str, n: int) -> None:
    async with GatewayClient(url, token="T") as client:
        for _ in range(n):
            await client.call("health")


@pytest.mark.parametrize("untraced", [None, ""], ids=["health-untraced", "every-request-traced"])
async def test_every_request_is_counted_and_traced_as_the_policy_says_and_eof_flushes(
        tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, untraced: str | None) -> None:
    """CLAWDBOT_OTEL_UNTRACED_METHODS unset: a successful health request is counted but makes no span, a
    failing one keeps its span; set empty: every request makes a span (the design's pseudo-code)."""
    if untraced is not None:
        monkeypatch.setenv("CLAWDBOT_OTEL_UNTRACED_METHODS", untraced)
    n = 40
    async with _proxy(tmp_path) as (proxy, cap_up):
        await _health(proxy.url, n)
        async with connect(proxy.url, compression=None) as ws:  # a client with a trace of its own
            await ws.recv()  # connect.challenge
            # a health request before the handshake: the gateway answers with an error
            await ws.send(json.dumps({"type": "req", "id": "h", "method": "health"}))
            assert json.loads(await ws.recv())["ok"] is False
            await ws.send(json.dumps({"type": "req", "id": "c", "method": "connect", "traceparent": CLIENT_TRACEPARENT,
                                      "params": {"minProtocol": 4, "maxProtocol": 4, "auth": {"token": "T"},
                                                 "client": {"id": "cli", "mode": "cli"}}}))
            while json.loads(await ws.recv()).get("id") != "c":
                pass
        assert proxy.process_feed is not None
        child = proxy.process_feed.proc
    # stop() closed the child's input: it ended, exported everything and exited cleanly
    assert child is not None and child.returncode == 0
    spans = _request_spans(out)
    methods = sorted(_method(s) for s in spans)
    traced_ok = n if untraced == "" else 0
    assert methods == ["connect", "connect"] + ["health"] * (1 + traced_ok)
    failed = [s for s in spans if _method(s) == "health" and s["status"].get("code") == "STATUS_CODE_ERROR"]
    assert len(failed) == 1
    counted = _counter(out, "gateway.requests")
    assert counted == {(("method", "connect"), ("status", "success")): 2,
                       (("method", "health"), ("status", "success")): n,
                       (("method", "health"), ("status", "failure")): 1}
    # the upstream got each request with our span's ids in its traceparent: its spans are our children
    # (its own observer follows the same policy)
    ours = {(_hex(s["traceId"]), _hex(s["spanId"])) for s in spans}
    theirs = cap_up.spans_by_category("request")
    assert len(theirs) == 3 + traced_ok
    assert {(f"{s.context.trace_id:032x}", f"{s.parent.span_id:016x}") for s in theirs if s.parent} == ours
    traced = next(s for s in spans if _hex(s["traceId"]) == CLIENT_TRACE)
    assert _hex(traced["parentSpanId"]) == "00f067aa0ba902b7"  # the client's span


async def test_the_relay_outlives_its_observer_process_and_the_loss_is_counted(
        tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWDBOT_OTEL_UNTRACED_METHODS", "")  # the new child's spans show what it observed
    async with _proxy(tmp_path) as (proxy, _cap_up):
        feed = proxy.process_feed
        assert feed is not None and feed.proc is not None
        async with GatewayClient(proxy.url, token="T") as client:
            feed.proc.kill()
            await feed.proc.wait()
            for _ in range(10):  # relayed as ever while nothing observes them
                await client.call("health")
            for _ in range(100):
                if feed.restarts:
                    break
                await asyncio.sleep(0.05)
            assert feed.restarts == 1
            for _ in range(7):  # the connection is known to the new child: its requests are observed
                await client.call("health")
    lost = _counter(out, "clawdbot_otel.source_errors")
    # the 10 requests and their 10 responses at least (what was in the pipe when it died comes on top)
    assert lost[(("reason", "observer_process_restart"), ("source", "frames"))] >= 20
    counted = _counter(out, "gateway.requests")
    # the first child saw no health request; the second saw the 7 after it came back
    assert counted[(("method", "health"), ("status", "success"))] == 7
    assert sorted(_method(s) for s in _request_spans(out)) == ["health"] * 7


def test_the_relay_chooses_the_request_span_ids_and_the_span_takes_them() -> None:
    traceparent, (trace_id, span_id) = request_ids(CLIENT_TRACEPARENT)
    assert traceparent == f"00-{CLIENT_TRACE}-{span_id:016x}-01" and trace_id == int(CLIENT_TRACE, 16)
    root, (root_trace, root_span) = request_ids(None)
    assert root == f"00-{root_trace:032x}-{root_span:016x}-03"  # sampled, random trace id
    # what the OTel propagator would not take as a parent starts a trace of its own
    for bad in (f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{CLIENT_TRACE}-{'0' * 16}-01",
                f"ff-{CLIENT_TRACE}-00f067aa0ba902b7-01", f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01-extra",
                f"00-{CLIENT_TRACE.upper()}-00f067aa0ba902b7-01", "garbage"):
        tp, (tid, _sid) = request_ids(bad)
        assert tid != int(CLIENT_TRACE, 16) and tp.endswith("-03"), bad
    with capture_telemetry() as cap:
        with_parent = cap.telemetry.request_span("health", parent=CLIENT_TRACEPARENT, ids=(trace_id, span_id)).start()
        alone = cap.telemetry.request_span("health", parent="garbage", ids=(root_trace, root_span)).start()
        plain = cap.telemetry.request_span("health").start()  # no preset: the provider's own ids again
        for span in (with_parent, alone, plain):
            span.end()
    assert with_parent.traceparent == traceparent and alone.traceparent == root
    assert plain.span_id == "0000000000000001"  # capture_telemetry's incremental ids, untouched
    (first, *_rest) = cap.finished_spans()
    assert first.parent is not None and first.parent.span_id == 0x00F067AA0BA902B7


async def test_an_observer_process_that_falls_behind_costs_telemetry_never_traffic(tmp_path: Path, out: Path) -> None:
    async with _proxy(tmp_path) as (proxy, _cap_up):
        assert proxy.process_feed is not None
        proxy.process_feed.max_buffer_bytes = 1  # whatever waits to be written is "too much"
        async with GatewayClient(proxy.url, token="T") as client:
            answers = [await client.call("health") for _ in range(20)]
    assert len(answers) == 20 and all(isinstance(a, dict) for a in answers)
    lost = _counter(out, "clawdbot_otel.source_errors")[(("reason", "observer_queue_full"), ("source", "frames"))]
    succeeded = sum(v for k, v in _counter(out, "gateway.requests").items() if ("status", "success") in k)
    assert lost >= 1 and succeeded < 21  # some requests or their responses went unobserved, and were counted


class _Calls:
    """A consumer that writes down what the observer process's reader hands it."""

    max_observed_bytes = 64

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def opened(self, conn_id: str, headers: dict[str, str]) -> None:
        self.calls.append(("opened", conn_id, headers))

    def closed(self, conn_id: str, code: int | None, reason: str, closed_ns: int = 0) -> None:
        self.calls.append(("closed", conn_id, code, reason, closed_ns))

    def stream_cut(self, conn_id: str, data: bytes, received_ns: int, gap: bool) -> list[bytes]:
        self.calls.append(("stream", conn_id, data, received_ns, gap))
        return [b"cut " + data, b"x" * 100]  # as if the read held two messages, the second large

    def relay_error(self, message: str, metadata: dict[str, Any]) -> None:
        self.calls.append(("relay_error", message, metadata))

    def lost(self, reason: str, count: int) -> None:
        self.calls.append(("lost", reason, count))

    def message_now(self, *args: Any) -> None:
        self.calls.append(("message", *args))

    async def message(self, *args: Any) -> None:
        await asyncio.sleep(0)
        self.calls.append(("large message", *args))


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
async def test_the_observer_process_reads_records_split_anyhow_in_order(chunk: int) -> None:
    from clawdbot_otel.gateway import _observer_process as op

    def record(kind: int, conn: int, received: int, payload: bytes) -> bytes:
        return op._HEAD.pack(kind, conn, received, len(payload)) + payload

    large = json.dumps({"type": "res", "id": "1", "ok": True, "payload": {"text": "x" * 100}})
    stream = b"".join((
        record(op.OPEN, 1, 0, json.dumps(["conn-a", {"user-agent": "t"}]).encode()),
        record(op.MESSAGE | op.IDS, 1, 10, op._IDS.pack(1, 2, 3) + b'{"type":"req","id":"1","method":"health"}'),
        record(op.MESSAGE | op.S2C, 1, 11, large.encode()),
        record(op.MESSAGE | op.S2C | op.BINARY, 1, 12, b"\x00bin"),
        record(op.STREAM | op.S2C, 1, 14, b"\x81\x02{}"),
        record(op.STREAM | op.S2C | op.GAP, 1, 15, b"\x81\x00"),
        record(op.STREAM | op.S2C, 9, 15, b"\x81\x02{}"),  # a connection never opened: skipped
        record(op.MESSAGE, 9, 13, b"{}"),  # a connection never opened: skipped
        record(op.ERROR, 0, 0, json.dumps(["relay failed", {"k": 1}]).encode()),
        record(op.LOST, 0, 0, b'{"observer_queue_full": 2}'),
        record(op.CLOSE, 1, 0, b'[1000, "bye", 16]'),
    ))
    reader = asyncio.StreamReader()
    reads: list[int] = []

    async def feed() -> None:  # a piece at a time, each read by the reader before the next comes
        for start in range(0, len(stream), chunk):
            reader.feed_data(stream[start:start + chunk])
            reads.append(start)
            for _ in range(3):
                await asyncio.sleep(0)
        reader.feed_eof()

    calls = _Calls()
    await asyncio.gather(feed(), op._read_records(reader, calls))  # type: ignore[arg-type]
    assert len(reads) == -(-len(stream) // chunk)
    assert calls.calls == [
        ("opened", "conn-a", {"user-agent": "t"}),
        ("message", "conn-a", "c2s", '{"type":"req","id":"1","method":"health"}', 10, ((1 << 64) | 2, 3)),
        ("large message", "conn-a", "s2c", large, 11, None),
        ("message", "conn-a", "s2c", b"\x00bin", 12, None),
        ("stream", "conn-a", b"\x81\x02{}", 14, False),
        ("message", "conn-a", "s2c", b"cut \x81\x02{}", 14),
        ("large message", "conn-a", "s2c", b"x" * 100, 14),
        ("stream", "conn-a", b"\x81\x00", 15, True),
        ("message", "conn-a", "s2c", b"cut \x81\x00", 15),
        ("large message", "conn-a", "s2c", b"x" * 100, 15),
        ("relay_error", "relay failed", {"k": 1}),
        ("lost", "observer_queue_full", 2),
        ("closed", "conn-a", 1000, "bye", 16),
    ]

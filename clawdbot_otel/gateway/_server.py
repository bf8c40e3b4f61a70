"""The gateway WebSocket server: the embedded runtime, or a transparent proxy in front of a real gateway.

Both modes feed one `FrameObserver`. The proxy relays WebSocket bytes on asyncio transports (`_proxy`,
docs/proxy-relay.md): it parses client requests to choose their span's ids and put a `traceparent` in
them, and hands every message to the observer's feed; everything else passes byte for byte. The
observer parses and observes from the feed, off the relay path: the relay never waits for telemetry (a
full feed drops the message from telemetry, counted, never from the traffic), and messages above
`max_observed_bytes` are parsed in a worker thread. The feed is a queue and a task in this process
(`LocalFeed`), or with `observer_process=True` (what `clawdbot-otel gateway --upstream` uses) a child
process that also runs the SDK, its exporters, the upstream monitor and the watchers
(`_observer_process`): the relay's process then runs no telemetry thread at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from clawdbot_otel import Telemetry
from clawdbot_otel.frames import (
    ERROR_INVALID_REQUEST,
    EventFrame,
    FrameError,
    RequestFrame,
    ResponseFrame,
    error_response,
    parse_frame,
)
from clawdbot_otel.simulation import DEFAULT_CRON_JOBS, CronJob, EmbeddedRuntime, Workspace

from ._companions import Companions, ObserverCompanions
from ._feed import FrameConsumer, FrameFeed, LocalFeed
from ._monitor import UpstreamMonitor
from ._observer import FrameObserver
from ._observer_process import ProcessFeed
from ._proxy import ProxyRelay
from ._relay import inject_traceparent

__all__ = ["GatewayServer", "inject_traceparent"]

_NS = 1_000_000_000
#: Handshake headers worth recording on request spans (redacted).
_RECORDED_HEADERS = ("user-agent", "origin", "authorization", "x-forwarded-for")
#: What the proxy passes upstream of the client's handshake. No X-Forwarded-For: the real gateway treats
#: it as a proxied client from an untrusted proxy.
_FORWARDED_HEADERS = ("authorization", "cookie", "x-openclaw-token", "origin", "user-agent")
#: What OpenClaw sends a connection without scopes (its probe client): everything else needs operator.read.
_LIVENESS_EVENTS = frozenset({"tick", "health", "shutdown"})


class _Peer:
    """An embedded-mode client connection: an ordered, bounded outbound queue and its writer task."""

    __slots__ = ("authed", "events", "id", "queue", "seq", "server", "writer", "ws")

    _CLOSE = object()

    def __init__(self, server: GatewayServer, ws: ServerConnection, conn_id: str, max_queue: int) -> None:
        self.server = server
        self.ws = ws
        self.id = conn_id
        self.authed = False
        self.events = False
        self.seq = 0
        self.queue: asyncio.Queue[Any] = asyncio.Queue(max_queue)
        self.writer = asyncio.create_task(self._write())

    def send_frame(self, frame: dict[str, Any]) -> None:
        observer = self.server.observer
        if observer is not None and frame.get("type") == "res":
            self.server.guard(observer.frame, self.id, "s2c", ResponseFrame(
                frame["id"], frame["ok"], frame.get("payload"), frame.get("error"), frame))
        self._put(orjson.dumps(frame).decode())

    def send_event(self, event: str, payload_json: str) -> None:
        self.seq += 1
        self._put(f'{{"type":"event","event":"{event}","payload":{payload_json},"seq":{self.seq}}}')

    def send_challenge(self, payload_json: str) -> None:
        """The handshake's first frame: as the real gateway sends it, outside the event sequence."""
        self._put(f'{{"type":"event","event":"connect.challenge","payload":{payload_json}}}')

    def close_later(self, code: int, reason: str) -> None:
        self._put((self._CLOSE, code, reason))

    def _put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # a client that does not read: drop it rather than buffer forever
            self.server.count_error("runtime")
            self.writer.cancel()
            self.writer = asyncio.create_task(self.ws.close(1008, "slow consumer"))

    async def _write(self) -> None:
        ws = self.ws
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, tuple):
                    await ws.close(item[1], item[2])
                    return
                await ws.send(item)
        except ConnectionClosed:
            pass


class GatewayServer:
    """`clawdbot-otel gateway`: listen on host:port; embedded runtime, or proxy to `upstream`.

    `observe=False` runs the same relay with no telemetry at all (the benchmark's baseline).
    `collectors=True` (embedded mode) also runs the spawn-queue, inbox and heartbeat watchers and the
    resource sampler over the workspace, inside this process.
    `scheduler_from_frames=False` leaves automations and task completions to an `OpenClawStateWatcher`
    over the upstream's state (it sees every run, connected or not; counting the frames too would double);
    `openclaw_state` (a folder) starts that watcher, every `openclaw_state_interval_s`.
    `observer_process=True` (proxy mode) observes in a child process that sets telemetry up from the
    OTEL_* variables itself (`telemetry` then only serves the relay's redactor), with `instance_id` as
    its `service.instance.id`. `max_size`: the largest message a client may send (embedded mode); in
    proxy mode the largest one assembled for the observer (larger ones are relayed and counted).
    """

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        host: str = "127.0.0.1",
        port: int = 18789,
        upstream: str | None = None,
        upstream_token: str | None = None,
        monitor_upstream: bool = True,
        workspace: Path | str | None = None,
        token: str | None = None,
        observe: bool = True,
        collectors: bool = True,
        time_scale: float = 1.0,
        tick_interval_s: float = 30.0,
        cron_jobs: tuple[CronJob, ...] = DEFAULT_CRON_JOBS,
        seed: int | None = None,
        max_size: int | None = 64 * 1024 * 1024,
        max_observed_bytes: int = 1 << 20,
        sweep_interval_s: float = 5.0,
        run_timeout_s: float = 900.0,
        max_queue: int = 10_000,
        max_observe_queue: int = 10_000,
        heartbeat_stale_after_s: float = 300.0,
        scheduler_from_frames: bool = True,
        openclaw_state: Path | None = None,
        openclaw_state_interval_s: float = 15.0,
        observer_process: bool = False,
        instance_id: str | None = None,
    ) -> None:
        self.telemetry = telemetry
        # the tokens have no format the redactor could find them by: it hides these exact values
        telemetry.redactor.add_secret(token, "gateway-token")
        telemetry.redactor.add_secret(upstream_token, "gateway-token")
        self.host = host
        self.port = port
        self.upstream = upstream
        self.token = token
        self.observe = observe
        self.max_size = max_size
        self.max_observed_bytes = max_observed_bytes
        self.max_queue = max_queue
        if workspace:
            self.workspace = Workspace(Path(workspace).expanduser())
        elif upstream is None:  # the simulator answers and deletes files: never in the real ~/clawd
            self.workspace = Workspace.simulation_default()
        else:  # proxy mode only reads the real scheduler's folders
            self.workspace = Workspace.default()
        self.collectors_enabled = collectors and observe
        self.observer: FrameObserver | None = None
        self.observer_errors: list[BaseException] = []
        self.feed: FrameFeed | None = None
        self.process_feed: ProcessFeed | None = None
        self._local_feed: LocalFeed | None = None
        if upstream is not None and observe and observer_process:
            self._instance_id = instance_id
            self.process_feed = ProcessFeed({  # url, mode, instance_id and started_at: at start()
                "upstream": upstream, "upstream_token": upstream_token,
                "secrets": [t for t in (token, upstream_token) if t],
                "monitor_upstream": monitor_upstream, "collectors": self.collectors_enabled,
                "workspace": str(self.workspace.root),
                "heartbeat_stale_after_s": heartbeat_stale_after_s, "run_timeout_s": run_timeout_s,
                "max_observed_bytes": max_observed_bytes, "max_message_bytes": max_size,
                "sweep_interval_s": sweep_interval_s,
                "scheduler_from_frames": scheduler_from_frames,
                "openclaw_state": {"folder": str(openclaw_state), "interval_s": openclaw_state_interval_s}
                if openclaw_state is not None else None,
            })
            self.feed = self.process_feed
            self.collectors_enabled = False
            observe = False  # nothing of the observer's in this process
        if observe:
            # Embedded: the spawn-queue watcher counts sub-agents from its response files (the simulator
            # spawns through the queue only). Proxy: the observer does, from sub-agent session keys.
            self.observer = FrameObserver(telemetry, run_timeout_s=run_timeout_s,
                                          count_subagents=not (self.collectors_enabled and upstream is None),
                                          count_cron=scheduler_from_frames, count_tasks=scheduler_from_frames)
        # Proxy mode: the upstream's liveness and uptime come from a probe connection of our own.
        monitor = (UpstreamMonitor(telemetry, upstream, upstream_token)
                   if upstream and observe and monitor_upstream else None)
        self.runtime: EmbeddedRuntime | None = None
        if upstream is None:
            self.runtime = EmbeddedRuntime(
                self.workspace, self._broadcast, token=token, time_scale=time_scale,
                tick_interval_s=tick_interval_s, cron_jobs=cron_jobs, seed=seed,
                trace_lookup=self.observer.run_traceparent if self.observer is not None else None)
        self._consumer = (FrameConsumer(telemetry, self.observer, max_observed_bytes=max_observed_bytes,
                                        max_message_bytes=max_size, errors=self.observer_errors)
                          if self.observer is not None else None)
        if self._consumer is not None and upstream is not None:
            self._local_feed = LocalFeed(self._consumer, max_observe_queue)
            self.feed = self._local_feed
        self.companions = (ObserverCompanions(telemetry, self._consumer, Companions(
            sweep_interval_s=sweep_interval_s, workspace=self.workspace if self.collectors_enabled else None,
            create_folders=upstream is None, heartbeat_stale_after_s=heartbeat_stale_after_s,
            openclaw_state=openclaw_state, openclaw_state_interval_s=openclaw_state_interval_s,
        ), monitor) if self._consumer is not None else None)
        self.peers: dict[str, _Peer] = {}
        self._open_connections = 0
        self.started_at = time.time()
        self._server: Server | asyncio.Server | None = None
        self._relay: ProxyRelay | None = None
        self._feed_task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def monitor(self) -> UpstreamMonitor | None:
        """The upstream's probe (proxy mode, observed in this process)."""
        return self.companions.monitor if self.companions is not None else None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        if self.upstream:
            return f"proxy to {self.telemetry.redactor.scrub(self.upstream)}"
        return f"embedded runtime, workspace {self.workspace.root}"

    async def start(self) -> None:
        if self.upstream:
            self._relay = ProxyRelay(self.upstream, self.feed, max_observed_bytes=self.max_observed_bytes,
                                     max_message_bytes=self.max_size, recorded=_RECORDED_HEADERS,
                                     forwarded=_FORWARDED_HEADERS, scrub=self.telemetry.redactor.scrub)
            self._server = await asyncio.get_running_loop().create_server(self._relay.protocol, self.host, self.port)
        else:
            self._server = await serve(self._embedded_connection, self.host, self.port, max_size=self.max_size,
                                       compression=None)
        sockets = list(self._server.sockets)
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        self.started_at = time.time()
        if self.process_feed is not None:
            self.process_feed.config.update(
                url=self.url, mode=self.mode, started_at=self.started_at,
                instance_id=self._instance_id or f"{socket.gethostname()}:{self.port}")
            await self.process_feed.start()
        if self.runtime is not None:
            await self.runtime.start()
        if self._local_feed is not None:
            self._feed_task = asyncio.create_task(self._local_feed.run())
        if self.companions is not None:
            self.companions.start(self.started_at)
        if self.process_feed is None:  # else the observer process says it
            self.telemetry.log("INFO", "gateway", "Gateway started", metadata={"url": self.url, "mode": self.mode})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._relay is not None:
                await self._relay.close_all()
            await self._server.wait_closed()
        if self.runtime is not None:
            await self.runtime.stop()
        if self.process_feed is not None:
            await self.process_feed.stop()  # the observer process exports what it holds, then exits
            return
        if self._local_feed is not None:
            await self._local_feed.finish(self._feed_task)
            if self._feed_task is not None:
                self._feed_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._feed_task
        if self.companions is not None:
            await self.companions.stop()
        if self.observer is not None:
            self.observer.close()  # what is still open ends now, marked as cut short
        self.telemetry.log("INFO", "gateway", "Gateway stopped", metadata={"url": self.url})

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # --- shared ----------------------------------------------------------------------------------
    def guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call into the observer; whatever it raises stays here (the relay must not die of telemetry)."""
        return self._consumer.guard(fn, *args) if self._consumer is not None else None

    def count_error(self, error_type: str) -> None:
        if self.observe:
            self.telemetry.increment("gateway_errors_total", {"error_type": error_type})

    def _opened(self, ws: ServerConnection) -> str:
        conn_id = str(uuid.uuid4())
        sink = self.feed or self._consumer
        if sink is not None:
            headers = {}
            if ws.request is not None:
                for name in _RECORDED_HEADERS:
                    value = ws.request.headers.get(name)
                    if value is not None:
                        headers[name] = value
            remote = ws.remote_address
            if remote:
                headers["x-remote-address"] = f"{remote[0]}"
            sink.opened(conn_id, headers)
        return conn_id

    def _closed(self, conn_id: str, code: int | None, reason: str) -> None:
        sink = self.feed or self._consumer  # a feed: after the frames of this connection still queued
        if sink is not None:
            sink.closed(conn_id, code, reason)

    # --- embedded mode ---------------------------------------------------------------------------
    def _broadcast(self, event: str, payload: dict[str, Any]) -> None:
        """An event for every connected, authenticated client: observed once, encoded once."""
        observer = self.observer
        if observer is not None:
            self.guard(observer.frame, "", "s2c", EventFrame(event, payload, None, {}))
        payload_json = orjson.dumps(payload).decode()
        liveness = event in _LIVENESS_EVENTS
        for peer in list(self.peers.values()):
            if peer.authed and (peer.events or liveness):
                peer.send_event(event, payload_json)

    async def _embedded_connection(self, ws: ServerConnection) -> None:
        runtime = self.runtime
        assert runtime is not None
        conn_id = self._opened(ws)
        peer = _Peer(self, ws, conn_id, self.max_queue)
        self.peers[conn_id] = peer
        observer = self.observer
        try:
            challenge = runtime.challenge()
            if observer is not None:
                self.guard(observer.frame, conn_id, "s2c", EventFrame("connect.challenge", challenge, None, {}))
            peer.send_challenge(orjson.dumps(challenge).decode())
            async for message in ws:
                received = time.time_ns()
                try:
                    frame = parse_frame(message)
                except FrameError as exc:
                    if observer is not None:
                        self.guard(observer.invalid, "c2s", exc.reason)
                    peer.send_frame(error_response(exc.frame_id, ERROR_INVALID_REQUEST, f"invalid frame: {exc}"))
                    continue
                if isinstance(frame, RequestFrame):
                    if observer is not None:
                        self.guard(observer.request, conn_id, frame, received)
                    runtime.handle(peer, frame)
                else:  # clients send requests only
                    if observer is not None:
                        self.guard(observer.invalid, "c2s", f"unexpected_{type(frame).__name__.lower()}")
                    peer.send_frame(error_response(None, ERROR_INVALID_REQUEST,
                                                   "invalid frame: clients send request frames only"))
        except ConnectionClosed:
            pass
        finally:
            self.peers.pop(conn_id, None)
            peer.writer.cancel()  # the socket is closed: what is still queued cannot be delivered
            self._closed(conn_id, ws.close_code, ws.close_reason or "")

"""The proxy's observer process: the frame observer, the OpenTelemetry SDK and its exporters, the upstream
monitor and the watchers run in a child process, so that the relay's process holds no SDK thread that
could take the GIL from its event loop.

The relay (`ProcessFeed`) writes records to the child's stdin, a few milliseconds' worth per write:

    record := kind u8 | connection u32 | received ns i64 | length u32 | payload
    kinds  := CONFIG (first, JSON) | OPEN (JSON id, headers) | CLOSE (JSON code, reason, ns the relay saw it)
            | MESSAGE with flags S2C, BINARY, IDS (payload: [trace id u128, span id u64] + the frame's bytes)
            | STREAM with flags S2C, GAP (payload: one read of the upstream's WebSocket bytes, as it came;
              the child cuts the messages out of them, `_ws_messages`; GAP: reads before it were lost)
            | ERROR (JSON message, metadata: an error of the relay itself) | LOST (JSON {reason: count})

Bounded: past `max_buffer_bytes` waiting to be written, messages are dropped and counted
(`observer_queue_full`), never the frames. After a STREAM read dropped so (or lost in a restart) the
connection's next one carries GAP: the child skips reads (`stream_gap`) until one is whole frames, and cuts
from there. The child flushes and exits at the end of its input (the gateway stops, or dies). When the child
dies, the relay goes on; it restarts the child (with a growing delay), tells it the connections still open,
and the messages that could not be handed over meanwhile are counted (`observer_process_restart`).

    python -m clawdbot_otel.gateway._observer_main   # what ProcessFeed starts; reads stdin
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from ._feed import QUEUE_FULL, FrameConsumer, Ids

__all__ = ["ProcessFeed", "main"]

_HEAD = struct.Struct("<BIqI")
_IDS = struct.Struct("<QQQ")
CONFIG, OPEN, CLOSE, ERROR, LOST = 1, 2, 3, 4, 5
MESSAGE, S2C, BINARY, IDS = 16, 1, 2, 4  # MESSAGE | flags
STREAM, GAP = 32, 2  # STREAM | S2C | GAP
RESTART_LOST = "observer_process_restart"
#: The observer process yields the CPU to the relay (and to the gateway it relays to, when on this host):
#: under load it falls behind and catches up when there is CPU to spare; past the buffer's bound its
#: observations are dropped and counted, never the relay's frames delayed.
NICENESS = 10
_MODULE = "clawdbot_otel.gateway._observer_main"  # not imported by the package: runpy wants it fresh


class ProcessFeed:
    """The relay's side of the observer process (see the module docstring). `config` is what the child
    builds its observer from (`_serve`); `start()` and `stop()` run in the relay's event loop."""

    def __init__(self, config: Mapping[str, Any], *, max_buffer_bytes: int = 32 << 20, flush_bytes: int = 64 << 10,
                 flush_interval_s: float = 0.005, restart_delay_s: float = 1.0, max_restart_delay_s: float = 30.0,
                 command: tuple[str, ...] = (sys.executable, "-m", _MODULE)) -> None:
        self.config = dict(config)
        self.max_buffer_bytes = max_buffer_bytes
        self.flush_bytes = flush_bytes
        self.flush_interval_s = flush_interval_s
        self.restart_delay_s = restart_delay_s
        self.max_restart_delay_s = max_restart_delay_s
        self.command = command
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()
        self._buffered = 0  # messages in _buf
        self._timer: asyncio.TimerHandle | None = None
        self._conns: dict[str, tuple[int, Mapping[str, str]]] = {}
        self._next_conn = 0
        self._lost: dict[str, int] = {}
        self._gapped: set[str] = set()  # connections whose upstream stream lost a read since the last one sent
        self._down = False  # the child died and is not back yet
        self._supervisor: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._spawn(replay=False)
        self._supervisor = asyncio.create_task(self._supervise())

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Flush, close the child's input (it ends its spans, exports and exits), wait for it."""
        self._flush()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        proc, writer = self.proc, self._writer
        if proc is None or writer is None:
            return
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _spawn(self, *, replay: bool) -> None:
        """Start the child; its configuration goes first, then (`replay`: a restarted child) the connections
        open now, then what waits in the buffer."""
        proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        assert proc.stdin is not None
        config = orjson.dumps(self.config)
        head = bytearray(_HEAD.pack(CONFIG, 0, 0, len(config)) + config)
        if replay:
            for conn_id, (number, headers) in self._conns.items():
                payload = orjson.dumps([conn_id, headers])
                head += _HEAD.pack(OPEN, number, 0, len(payload)) + payload
        self._buf[:0] = head
        self.proc, self._writer, self._down = proc, proc.stdin, False
        self._flush()

    async def _supervise(self) -> None:
        """Restart the child whenever it exits (the relay never waits for it, nor dies with it)."""
        delay = self.restart_delay_s
        while True:
            assert self.proc is not None
            started = time.monotonic()
            code = await self.proc.wait()
            self._writer, self._down = None, True
            self._gapped.update(self._conns)  # their streams' buffered reads are gone
            self.lost(RESTART_LOST, self._buffered)
            self._buf.clear()
            self._buffered = 0
            sys.stderr.write(f"clawdbot-otel gateway: the observer process exited ({code}); restarting it in "
                             f"{delay:g} s (relaying goes on; the telemetry meanwhile is lost and counted)\n")
            sys.stderr.flush()
            if time.monotonic() - started > 60:
                delay = self.restart_delay_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_restart_delay_s)
            self.restarts += 1
            self.lost(RESTART_LOST, 0)  # the restart itself is news even when nothing was dropped
            await self._spawn(replay=True)

    # --- the feed (FrameFeed) -----------------------------------------------------------------------
    def opened(self, conn_id: str, headers: Mapping[str, str]) -> None:
        self._next_conn += 1
        self._conns[conn_id] = (self._next_conn, headers)
        self._record(OPEN, self._next_conn, 0, orjson.dumps([conn_id, headers]))

    def closed(self, conn_id: str, code: int | None, reason: str, closed_ns: int = 0) -> None:
        conn = self._conns.pop(conn_id, None)
        self._gapped.discard(conn_id)
        if conn is not None:
            self._record(CLOSE, conn[0], 0, orjson.dumps([code, reason, closed_ns]))

    def relay_error(self, message: str, metadata: Mapping[str, Any]) -> None:
        self._record(ERROR, 0, 0, orjson.dumps([message, metadata], default=str))

    def stream(self, conn_id: str, direction: str, data: bytes, received_ns: int) -> None:
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        if self._full():
            self._gapped.add(conn_id)
            return
        kind = STREAM | S2C
        if conn_id in self._gapped:
            self._gapped.discard(conn_id)
            kind |= GAP
        buf = self._buf
        buf += _HEAD.pack(kind, conn[0], received_ns, len(data))
        buf += data
        self._buffered += 1
        self._wrote()

    def _full(self) -> bool:
        """The child is restarting or falls behind: an observation is lost (counted), never the frame."""
        if self._down:
            self.lost(RESTART_LOST, 1)
            return True
        writer = self._writer
        waiting = len(self._buf) + (writer.transport.get_write_buffer_size() if writer is not None else 0)
        if waiting > self.max_buffer_bytes:
            self.lost(QUEUE_FULL, 1)
            return True
        return False

    def message(self, conn_id: str, direction: str, message: str | bytes, received_ns: int,
                ids: Ids | None = None) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or self._full():
            return
        kind = MESSAGE | (S2C if direction == "s2c" else 0)
        if isinstance(message, str):
            data = message.encode()
        else:
            data = message
            kind |= BINARY
        buf = self._buf
        if ids is None:
            buf += _HEAD.pack(kind, conn[0], received_ns, len(data))
        else:
            trace_id, span_id = ids
            buf += _HEAD.pack(kind | IDS, conn[0], received_ns, len(data) + _IDS.size)
            buf += _IDS.pack(trace_id >> 64, trace_id & 0xFFFFFFFFFFFFFFFF, span_id)
        buf += data
        self._buffered += 1
        self._wrote()

    def _record(self, kind: int, conn: int, received_ns: int, payload: bytes) -> None:
        """A control record (never dropped: they are few and small)."""
        if self._down:
            return  # the child is restarting: OPEN records are replayed, the rest is moot
        self._buf += _HEAD.pack(kind, conn, received_ns, len(payload))
        self._buf += payload
        self._wrote()

    def _wrote(self) -> None:
        if len(self._buf) >= self.flush_bytes:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            return
        if self._lost:
            payload = orjson.dumps(self._lost)
            self._lost = {}
            self._buf += _HEAD.pack(LOST, 0, 0, len(payload))
            self._buf += payload
        if self._buf:
            buf, self._buf = self._buf, bytearray()
            self._buffered = 0
            writer.write(buf)

    def lost(self, reason: str, count: int) -> None:
        self._lost[reason] = self._lost.get(reason, 0) + count


# --- the child --------------------------------------------------------------------------------------------
async def _read_records(reader: asyncio.StreamReader, consumer: FrameConsumer) -> None:
    """Feed the consumer from the relay's records until the end of the input.

    The relay writes a few milliseconds' worth of records at a time: each read takes what the pipe holds
    and the complete records in it are observed in one go (two awaits per record cost more than most
    records' observation); only a message over `max_observed_bytes` is awaited (parsed in a thread)."""
    conns: dict[int, str] = {}
    head_size = _HEAD.size
    unpack_head = _HEAD.unpack_from
    largest = consumer.max_observed_bytes
    buf = bytearray()
    while True:
        chunk = await reader.read(1 << 18)
        if not chunk:
            return
        buf += chunk
        size = len(buf)
        offset = 0
        while size - offset >= head_size:
            kind, number, received, length = unpack_head(buf, offset)
            start = offset + head_size
            end = start + length
            if end > size:
                break
            offset = end
            if kind & STREAM:
                conn_id = conns.get(number)
                if conn_id is None:
                    continue
                for cut in consumer.stream_cut(conn_id, bytes(buf[start:end]), received, bool(kind & GAP)):
                    if len(cut) <= largest:
                        consumer.message_now(conn_id, "s2c", cut, received)
                    else:
                        await consumer.message(conn_id, "s2c", cut, received)
            elif kind & MESSAGE:
                conn_id = conns.get(number)
                if conn_id is None:
                    continue
                ids = None
                if kind & IDS:
                    hi, lo, span_id = _IDS.unpack_from(buf, start)
                    ids = ((hi << 64) | lo, span_id)
                    start += _IDS.size
                payload = bytes(buf[start:end])
                message: str | bytes = payload if kind & BINARY else payload.decode(errors="replace")
                direction = "s2c" if kind & S2C else "c2s"
                if len(message) <= largest:
                    consumer.message_now(conn_id, direction, message, received, ids)
                else:
                    await consumer.message(conn_id, direction, message, received, ids)
            else:
                _control(kind, number, bytes(buf[start:end]), conns, consumer)
        del buf[:offset]


def _control(kind: int, number: int, payload: bytes, conns: dict[int, str], consumer: FrameConsumer) -> None:
    """A record that is not a message: a connection opened or closed, a relay error, telemetry lost."""
    if kind == OPEN:
        conn_id, headers = orjson.loads(payload)
        conns[number] = conn_id
        consumer.opened(conn_id, headers)
    elif kind == CLOSE:
        conn_id = conns.pop(number, None)
        if conn_id is not None:
            code, reason, closed_ns = orjson.loads(payload)
            consumer.closed(conn_id, code, reason, closed_ns)
    elif kind == ERROR:
        message_text, metadata = orjson.loads(payload)
        consumer.relay_error(message_text, metadata)
    elif kind == LOST:
        for reason, count in orjson.loads(payload).items():
            consumer.lost(reason, count)


async def _serve(config: Mapping[str, Any], reader: asyncio.StreamReader) -> None:
    """The observer side of a proxy gateway, until the relay's records end."""
    import clawdbot_otel
    from clawdbot_otel.simulation import Workspace

    from ._companions import Companions, ObserverCompanions
    from ._monitor import UpstreamMonitor
    from ._observer import FrameObserver

    telemetry = clawdbot_otel.get_telemetry()
    for secret in config.get("secrets", ()):
        telemetry.redactor.add_secret(secret, "gateway-token")
    from_frames = config["scheduler_from_frames"]
    observer = FrameObserver(telemetry, run_timeout_s=config["run_timeout_s"], count_cron=from_frames,
                             count_tasks=from_frames)
    consumer = FrameConsumer(telemetry, observer, max_observed_bytes=config["max_observed_bytes"],
                             max_message_bytes=config["max_message_bytes"])
    monitor = (UpstreamMonitor(telemetry, config["upstream"], config.get("upstream_token"))
               if config["monitor_upstream"] else None)
    state = config.get("openclaw_state")
    companions = ObserverCompanions(telemetry, consumer, Companions(
        sweep_interval_s=config["sweep_interval_s"],
        workspace=Workspace(Path(config["workspace"])) if config["collectors"] else None,
        heartbeat_stale_after_s=config["heartbeat_stale_after_s"],
        pid=os.getppid(), openclaw_state=Path(state["folder"]) if state is not None else None,
        openclaw_state_interval_s=state["interval_s"] if state is not None else 15.0,
    ), monitor)
    companions.start(config["started_at"])
    telemetry.log("INFO", "gateway", "Gateway started", metadata={"url": config["url"], "mode": config["mode"]})
    try:
        await _read_records(reader, consumer)
    finally:
        await companions.stop()
        observer.close()  # what is still open ends now, marked as cut short
        telemetry.log("INFO", "gateway", "Gateway stopped", metadata={"url": config["url"]})


async def _run() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    try:
        kind, _conn, _received, length = _HEAD.unpack(await reader.readexactly(_HEAD.size))
        config = orjson.loads(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        return 0
    if kind != CONFIG:
        sys.stderr.write("clawdbot-otel observer process: the first record is not the configuration\n")
        return 2
    import clawdbot_otel

    clawdbot_otel.setup(instance_id=config.get("instance_id"))
    try:
        await _serve(config, reader)
    finally:
        clawdbot_otel.shutdown()  # flushes every span, metric and log record
    return 0


def main() -> int:
    # The relay says when to stop (the end of this input): a Ctrl-C on the terminal or a TERM for the
    # process group must not kill the observer before it has exported what it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    return asyncio.run(_run())

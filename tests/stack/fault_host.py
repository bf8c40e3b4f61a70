"""The host application of the fault tests, run as its own process: `python fault_host.py OUT TICK_S MAX_S`.

An asyncio program that does what a host of the library does, through its public API only: `setup()`
from the OTEL_* variables it is given, then, every TICK_S seconds, one request span that fails (so the
tail sampler keeps its trace), one log line per level inside it, a counter increment and a histogram
sample. A second coroutine sleeps 10 ms in a loop and records how much later than asked it wakes up:
the worst stall of the event loop. Each tick is a JSON line in OUT (seq, epoch seconds when the span
ended, trace id); SIGTERM, or MAX_S seconds, ends the loop, then `shutdown()` flushes and a last line
{"summary": ...} gives the worst stall and anything the library raised into the host.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import TextIO

import clawdbot_otel as telemetry

LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
STALL_PROBE_S = 0.01


def message(service: str, seq: int, level: str) -> str:
    return f"{service} tick {seq} {level}"


class Host:
    def __init__(self, out: TextIO, service: str, tick_s: float, max_s: float) -> None:
        self.out = out
        self.service = service
        self.tick_s = tick_s
        self.max_s = max_s
        self.raised: list[str] = []
        self.worst_stall_s = 0.0
        self.ticks = 0
        self.stop = asyncio.Event()

    def tick(self) -> None:
        seq = self.ticks + 1
        with telemetry.request_span("agent", request_id=f"{self.service}-{seq}") as span:
            for level in LEVELS:
                telemetry.log(level, "gateway", message(self.service, seq, level))
            span.set_status("failure", "fault-test load", "runtime")
        telemetry.increment("gateway_requests_total", {"method": "agent", "status": "failure"})
        telemetry.histogram("gateway_request_latency_seconds", 0.05, {"method": "agent"})
        self.ticks = seq
        self.out.write(json.dumps({"seq": seq, "at": time.time(), "trace_id": span.trace_id}) + "\n")
        self.out.flush()

    async def send(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.tick()
            except Exception as exc:  # what the tests look for: the library never raises into its host
                self.raised.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.tick_s)
        self.stop.set()

    async def probe(self) -> None:
        while not self.stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(STALL_PROBE_S)
            self.worst_stall_s = max(self.worst_stall_s, time.monotonic() - before - STALL_PROBE_S)

    async def run(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.stop.set)
        await asyncio.gather(self.send(), self.probe())


def main(out_path: str, tick_s: float, max_s: float) -> int:
    settings = telemetry.setup(announce=None)
    with open(out_path, "a") as out:
        host = Host(out, settings.service_name, tick_s, max_s)
        asyncio.run(host.run())
        telemetry.shutdown(30_000)
        out.write(json.dumps({"summary": {"ticks": host.ticks, "worst_stall_s": host.worst_stall_s,
                                          "raised": host.raised}}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))

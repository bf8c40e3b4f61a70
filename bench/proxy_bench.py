"""Relay cost of the proxy: direct vs proxy (observer off) vs proxy (observer on), in one run.

    .venv/bin/python bench/proxy_bench.py --duration 20

An embedded gateway (no telemetry) is the upstream; each configuration gets the same load from this
process: `--clients` connections sending `health` requests (one in flight per connection) and, every
tenth request, an `agent` turn whose ~20 event frames flow back through the relay, in two shapes:

* paced: `--rate` requests/s in all, evenly spread (a busy gateway, not a saturated one): the added
  latency of each hop is what a client notices;
* saturated: back to back, so the proxy's CPU is the bottleneck: the throughput ratio is the capacity
  the observer costs.

The three paths run side by side and take turns (`--rounds` slices of `--duration` each), so that a
machine shared with other work disturbs them alike. Reported: round-trip p50/p99 of `health`,
requests/s, turn p99, the differences against the direct path and between observer on and off, and
the CPU per request (health or turn) of the relay's process and of its observer process (the proxy's
telemetry runs there: `clawdbot-otel gateway --upstream`). Exporters follow this process's OTEL_*
variables (set OTEL_EXPORTER_OTLP_ENDPOINT to the stack's collector for a production-like run).
Gateways run in child processes so the load generator does not share their event loop. About
`2 * 3 * duration` seconds in all (2 min at the default 20 s); `--compare-loops` adds both proxies on
the standard asyncio loop (the gateway runs on uvloop when it is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psutil

from clawdbot_otel.simulation import GatewayClient

_RUN_GATEWAY = (
    "import argparse, sys\n"
    "from clawdbot_otel.gateway import register\n"
    "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='command'))\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gateway_process(args: Sequence[str], *, telemetry_dir: str | None = None,
                    env_extra: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """(url, pid) of a gateway started with `args` (after `gateway`), production telemetry settings."""
    port = free_port()
    env = {**os.environ, **(env_extra or {})}
    env.setdefault("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=production")
    env["CLAWDBOT_OTEL_OUTPUT_DIR"] = telemetry_dir or tempfile.mkdtemp(prefix="clawdbot-otel-bench-")
    proc = subprocess.Popen([sys.executable, "-c", _RUN_GATEWAY, "gateway", "--port", str(port), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"gateway {' '.join(args)} exited with {proc.returncode}")
            time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()



async def _load(url: str, duration_s: float, clients: int, rate: float | None = None,
                ) -> tuple[list[float], list[float]]:
    """Round trips of `health` requests, and of whole agent turns (req -> ~20 events -> final res);
    back to back, or `rate` requests/s in all."""
    latencies: list[float] = []
    turns: list[float] = []
    deadline = time.monotonic() + duration_s
    interval = clients / rate if rate else 0.0

    async def one(offset: float) -> None:
        async with GatewayClient(url, token="bench") as client:
            n = 0
            next_at = time.monotonic() + offset
            while time.monotonic() < deadline:
                n += 1
                if interval:
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                t0 = time.perf_counter()
                if n % 10 == 0:
                    await client.agent("please use a tool now")
                    turns.append(time.perf_counter() - t0)
                    continue
                await client.call("health")
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(i * interval / clients) for i in range(clients)))
    return latencies, turns


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 100 else max(values)


class _Cpu:
    """CPU seconds of a gateway process and, apart, of its child processes (the observer process)."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid is not None else None

    def read(self) -> tuple[float, float]:
        if self.proc is None:
            return 0.0, 0.0
        own = sum(self.proc.cpu_times()[:2])
        children = 0.0
        for child in self.proc.children():
            with contextlib.suppress(psutil.Error):
                children += sum(child.cpu_times()[:2])
        return own, children


def _table(title: str, rows: list[tuple[Any, ...]]) -> None:
    base = rows[0]
    print(f"\n{title}\n{'path':<27}{'p50 ms':>9}{'p99 ms':>9}{'health/s':>10}{'turns':>7}{'turn p99':>10}"
          f"{'p50 +ms':>9}{'p99 +ms':>9}{'thrpt':>8}{'relay us/req':>13}{'observer us/req':>16}")
    for name, p50, p99, rps, turns, turn_p99, relay_us, observer_us in rows:
        print(f"{name:<27}{p50:>9.3f}{p99:>9.3f}{rps:>10.0f}{turns:>7}{turn_p99:>10.2f}{p50 - base[1]:>9.3f}"
              f"{p99 - base[2]:>9.3f}{rps / base[3]:>8.2f}{relay_us:>13.0f}{observer_us:>16.0f}")
    for off, on in zip(rows[1::2], rows[2::2], strict=True):
        loop = on[0].partition("(")[2].rstrip(")")
        print(f"observer on vs off{f' ({loop})' if loop else ''}: added p50 {on[1] - off[1]:+.3f} ms, "
              f"p99 {on[2] - off[2]:+.3f} ms, throughput {on[3] / off[3]:.3f}x, turn p99 {on[5] - off[5]:+.2f} ms")
    if len(rows) == 5:
        print(f"relay (observer off), default loop vs asyncio loop: p50 {rows[1][1] - rows[3][1]:+.3f} ms, "
              f"p99 {rows[1][2] - rows[3][2]:+.3f} ms, throughput {rows[1][3] / rows[3][3]:.3f}x")
    print(end="", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per configuration and shape")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s in all, paced shape")
    parser.add_argument("--rounds", type=int, default=4, help="turns each path takes per shape (interleaved)")
    parser.add_argument("--compare-loops", action="store_true",
                        help="also both proxies on the standard asyncio loop (CLAWDBOT_OTEL_EVENT_LOOP=asyncio), "
                        "to measure what uvloop (the default when installed) gives")
    args = parser.parse_args()
    upstream_args = ["--no-telemetry", "--token", "bench", "--time-scale", "0.01", "--workspace",
                     tempfile.mkdtemp(prefix="clawdbot-otel-bench-upstream-")]
    watched = tempfile.mkdtemp(prefix="clawdbot-otel-bench-clawd-")  # what the proxy's watchers read
    results: dict[str, list[tuple[Any, ...]]] = {"paced": [], "saturated": []}
    names = ["direct", "proxy, observer off", "proxy, observer on"]
    with contextlib.ExitStack() as stack:
        upstream, _ = stack.enter_context(gateway_process(upstream_args))
        proxy = ["--upstream", upstream, "--upstream-token", "bench", "--workspace", watched]
        paths = [(upstream, _Cpu(None))]
        loops: list[dict[str, str] | None] = [None]
        if args.compare_loops:
            loops.append({"CLAWDBOT_OTEL_EVENT_LOOP": "asyncio"})
            names += ["proxy, off (asyncio loop)", "proxy, on (asyncio loop)"]
        for env_extra in loops:
            for proxy_args in ([*proxy, "--no-telemetry"], proxy):
                url, pid = stack.enter_context(gateway_process(proxy_args, env_extra=env_extra))
                paths.append((url, _Cpu(pid)))
        time.sleep(2)  # the observer process's start (imports, exporters)
        slice_s = args.duration / args.rounds
        for shape, rate in (("paced", args.rate), ("saturated", None)):
            got: list[dict[str, Any]] = [{"lat": [], "turns": [], "relay": 0.0, "observer": 0.0} for _ in paths]
            for round_ in range(args.rounds):
                for i in (range(len(paths)) if round_ % 2 == 0 else reversed(range(len(paths)))):  # alternate too
                    url, cpu = paths[i]
                    before = cpu.read()
                    latencies, turns = asyncio.run(_load(url, slice_s, args.clients, rate))
                    after = cpu.read()
                    got[i]["lat"] += latencies
                    got[i]["turns"] += turns
                    got[i]["relay"] += after[0] - before[0]
                    got[i]["observer"] += after[1] - before[1]
            for name, g in zip(names, got, strict=True):
                latencies, turns = g["lat"], g["turns"]
                per_req = 1e6 / max(1, len(latencies) + len(turns))
                results[shape].append((name, statistics.median(latencies) * 1e3, _pct(latencies, 99) * 1e3,
                                       len(latencies) / args.duration, len(turns), _pct(turns, 99) * 1e3,
                                       g["relay"] * per_req, g["observer"] * per_req))
    _table(f"paced ({args.rate:.0f} requests/s)", results["paced"])
    _table("saturated (back to back)", results["saturated"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

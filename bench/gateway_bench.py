"""The embedded gateway under demo-like load, telemetry off vs on (production settings), in one run.

    .venv/bin/python bench/gateway_bench.py --duration 20        # default 300 s per configuration

Each configuration starts `clawdbot-otel gateway` in a child process (`--time-scale 0.01`, so the
simulated model and tools are fast and the gateway's own work dominates) and drives it from here with
`--clients` connections running the demo's mix of turns (plain, tools, failing and slow tools,
spawns, inbox messages, model errors) plus session and cron queries. Telemetry "on" is the
production default: not strict, INFO logs, batch exporters to local OTLP-JSON files, the folder
watchers and the resource sampler running. Reported: operations/s, p50/p99 operation latency,
throughput ratio, added p99, and the gateway's RSS sampled through the load (start = after the first
tenth, when imports and pools have warmed up; end = the last sample).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from clawdbot_otel.gateway import GatewayClient, GatewayError
from clawdbot_otel.gateway._demo import SCENARIOS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import gateway_process

_AGENT = [(name, weight, text) for name, weight, text in SCENARIOS
          if name not in ("sessions", "cron", "health", "bad_frame", "bad_token", "wait")]


async def _load(url: str, duration_s: float, clients: int, seed: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration_s

    async def one(rng: random.Random) -> None:
        nonlocal errors
        async with GatewayClient(url, token="bench") as client:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                roll = rng.random()
                try:
                    if roll < 0.1:
                        await client.call("sessions.list", {"limit": 20})
                    elif roll < 0.15:
                        await client.call("cron.list", {})
                    else:
                        text = rng.choices([a[2] for a in _AGENT], [a[1] for a in _AGENT])[0]
                        await client.agent(text)
                except GatewayError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

    master = random.Random(seed)
    await asyncio.gather(*(one(random.Random(master.random())) for _ in range(clients)))
    return latencies, errors


def _sample_rss(proc: psutil.Process, duration_s: float, out: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) <= duration_s:
        out.append((elapsed, proc.memory_info().rss))
        time.sleep(max(duration_s / 100, 0.2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for name, extra in (("telemetry off", ["--no-telemetry"]), ("telemetry on", [])):
        workspace = tempfile.mkdtemp(prefix="clawdbot-otel-bench-ws-")
        with gateway_process(["--token", "bench", "--time-scale", "0.01", "--workspace", workspace, *extra]) as (
                url, pid):
            proc = psutil.Process(pid)
            time.sleep(1.0)
            cpu_start = proc.cpu_times()
            samples: list[tuple[float, int]] = []  # (seconds into the load, RSS)
            sampler = threading.Thread(target=_sample_rss, args=(proc, args.duration, samples), daemon=True)
            sampler.start()
            latencies, errors = asyncio.run(_load(url, args.duration, args.clients, args.seed))
            cpu_end = proc.cpu_times()
            sampler.join()
        # "start" is after the first tenth of the load: imports, pools and caches have warmed up by then
        warm = [rss for t, rss in samples if t >= args.duration / 10] or [rss for _, rss in samples]
        rss_start, rss_end = warm[0], samples[-1][1]
        print(f"{name}: RSS MB over the run: " + " ".join(f"{t:.0f}s={rss / 2**20:.1f}" for t, rss in
                                                         samples[:: max(len(samples) // 10, 1)]))
        cpu_s = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies)
        rows.append((name, len(latencies) / args.duration, statistics.median(latencies) * 1e3, p99 * 1e3,
                     rss_start / 2**20, rss_end / 2**20, cpu_s / max(len(latencies), 1) * 1e3, errors))
    off = rows[0]
    print(f"\n{'gateway':<15}{'ops/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'RSS start':>11}{'RSS end':>9}"
          f"{'CPU ms/op':>11}{'errors':>8}")
    for name, ops, p50, p99, rss0, rss1, cpu, errors in rows:
        print(f"{name:<15}{ops:>8.1f}{p50:>9.2f}{p99:>9.2f}{rss0:>9.1f}MB{rss1:>7.1f}MB{cpu:>11.3f}{errors:>8}")
    on = rows[1]
    print(f"\nthroughput ratio (on/off) {on[1] / off[1]:.3f}; added p99 {on[3] - off[3]:+.2f} ms; "
          f"CPU per op {on[6] / off[6]:.2f}x; RSS growth with telemetry {on[5] - on[4]:+.1f} MB "
          f"over {args.duration:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

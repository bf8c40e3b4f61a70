"""The embedded gateway under the demo's load, telemetry off vs on (production settings), in one run.

    .venv/bin/python bench/gateway_bench.py                   # 300 s demo pacing + 60 s saturation, each side
    .venv/bin/python bench/gateway_bench.py --duration 30     # a quick look
    .venv/bin/python bench/gateway_bench.py --duration 60 --saturation 30 --rounds 3   # sides alternating, ~4 min

Each configuration starts `clawdbot-otel gateway` in a child process and drives it from here with the
demo's mix of turns (plain, tools, failing and slow tools, spawns, inbox messages, model errors) plus
session and cron queries, in two load shapes:

* demo pacing: the simulated runtime at its own speed (`--time-scale 1`: model calls of 50-300 ms,
  tools of 10-150 ms, slow tools of seconds) with `--clients` connections back to back. This is what a
  gateway sees: its throughput is set by the agents' latency, and telemetry shows as added latency.
  Reported: ops/s and their ratio, p50/p99 and the added p99, CPU per op, and RSS sampled through the
  run (start = after the first tenth, when imports and pools have warmed up; end = the last sample).
  With `--rounds N` each side runs N times for a share of the time, the two sides alternating, and the
  results are pooled (RSS: the last run's): on a shared machine the other load then falls on both.
* saturation: `--time-scale 0.01` and 8 clients, so the gateway's CPU is the bottleneck. Its throughput
  ratio is the price of producing the design's telemetry (about 7 spans, 3 log lines and 40 metric
  updates per turn through the OTel SDK) when the gateway itself does almost nothing.

Telemetry "on" is the production default: not strict, INFO logs, batch exporters, the folder watchers
and the resource sampler running. Exporters follow the OTEL_* variables of this process: set
OTEL_EXPORTER_OTLP_ENDPOINT (e.g. the stack's collector) for OTLP, as in production; without it they
write local OTLP-JSON files, whose JSON conversion costs more CPU than OTLP's protobuf.
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
from typing import Any

import psutil

from clawdbot_otel.simulation import SCENARIOS, GatewayClient, GatewayError

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


def _run_sides(sides: tuple[tuple[str, list[str]], ...], rounds: int, *, time_scale: float, duration_s: float,
               clients: int, seed: int) -> list[tuple[Any, ...]]:
    """Each side for `duration_s` in all, in `rounds` alternating runs (off on, on off, ...) so that the
    machine's other load falls on both sides alike; a fresh gateway per run, results pooled."""
    runs: dict[str, list[tuple[Any, ...]]] = {name: [] for name, _ in sides}
    for r in range(rounds):
        for name, extra in sides if r % 2 == 0 else tuple(reversed(sides)):
            runs[name].append(_run_side(name, extra, time_scale=time_scale, duration_s=duration_s / rounds,
                                        clients=clients, seed=seed + r))
    rows = []
    for name, _ in sides:
        parts = runs[name]
        latencies = [x for part in parts for x in part[1]]
        ops, cpu_s = len(latencies), sum(part[2] for part in parts)
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies)
        rows.append((name, ops / duration_s, statistics.median(latencies) * 1e3, p99 * 1e3, parts[-1][3],
                     parts[-1][4], cpu_s / max(ops, 1) * 1e3, sum(part[5] for part in parts)))
    return rows


def _run_side(name: str, extra: list[str], *, time_scale: float, duration_s: float, clients: int,
              seed: int) -> tuple[Any, ...]:
    """(name, latencies, CPU seconds, RSS start MB, RSS end MB, errors) of one gateway run."""
    workspace = tempfile.mkdtemp(prefix="clawdbot-otel-bench-ws-")
    with gateway_process(["--token", "bench", "--time-scale", str(time_scale), "--workspace", workspace,
                          *extra]) as (url, pid):
        proc = psutil.Process(pid)
        time.sleep(1.0)
        cpu_start = proc.cpu_times()
        samples: list[tuple[float, int]] = []  # (seconds into the load, RSS)
        sampler = threading.Thread(target=_sample_rss, args=(proc, duration_s, samples), daemon=True)
        sampler.start()
        latencies, errors = asyncio.run(_load(url, duration_s, clients, seed))
        cpu_end = proc.cpu_times()
        sampler.join()
    # "start" is after the first tenth of the load: imports, pools and caches have warmed up by then
    warm = [rss for t, rss in samples if t >= duration_s / 10] or [rss for _, rss in samples]
    print(f"  {name}: RSS MB over the run: " + " ".join(
        f"{t:.0f}s={rss / 2**20:.1f}" for t, rss in samples[:: max(len(samples) // 10, 1)]), flush=True)
    cpu_s = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    return name, latencies, cpu_s, warm[0] / 2**20, samples[-1][1] / 2**20, errors


def _report(title: str, rows: list[tuple[Any, ...]], duration_s: float) -> None:
    """`duration_s`: of the run the RSS columns come from."""
    print(f"\n{title}\n{'gateway':<15}{'ops/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'RSS start':>11}{'RSS end':>9}"
          f"{'CPU ms/op':>11}{'errors':>8}")
    for name, ops, p50, p99, rss0, rss1, cpu, errors in rows:
        print(f"{name:<15}{ops:>8.1f}{p50:>9.2f}{p99:>9.2f}{rss0:>9.1f}MB{rss1:>7.1f}MB{cpu:>11.3f}{errors:>8}")
    off, on = rows
    print(f"throughput ratio (on/off) {on[1] / off[1]:.3f}; added p99 {on[3] - off[3]:+.2f} ms; "
          f"CPU per op {on[6] / off[6]:.2f}x (+{on[6] - off[6]:.2f} ms); RSS with telemetry "
          f"{on[4]:.1f} -> {on[5]:.1f} MB over {duration_s:.0f} s (without: {off[4]:.1f} -> {off[5]:.1f} MB)",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per side at demo pacing")
    parser.add_argument("--saturation", type=float, default=None,
                        help="seconds per side at saturation (default: a fifth of --duration)")
    parser.add_argument("--clients", type=int, default=32, help="connections at demo pacing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1,
                        help="split each side's time into this many runs, alternating which side goes first")
    args = parser.parse_args()
    sides = (("telemetry off", ["--no-telemetry"]), ("telemetry on", []))
    saturation_s = args.saturation if args.saturation is not None else args.duration / 5
    print(f"demo pacing: {args.clients} clients, {args.duration:.0f} s per side", flush=True)
    demo = _run_sides(sides, args.rounds, time_scale=1.0, duration_s=args.duration, clients=args.clients,
                      seed=args.seed)
    print(f"saturation: 8 clients, time scale 0.01, {saturation_s:.0f} s per side", flush=True)
    saturated = _run_sides(sides, args.rounds, time_scale=0.01, duration_s=saturation_s, clients=8, seed=args.seed)
    _report("demo pacing (the runtime's own latencies)", demo, args.duration / args.rounds)
    _report("saturation (CPU-bound: the cost of the telemetry itself)", saturated, saturation_s / args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

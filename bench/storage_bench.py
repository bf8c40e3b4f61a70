"""Bytes on disk per day of metrics, logs (per level) and traces, measured on a fresh native stack.

    .venv/bin/python bench/storage_bench.py [--duration 300] [--concurrency 4] [--port-offset 1000] [--log-level DEBUG]

Starts a fresh stack in a temporary directory (ports shifted by --port-offset, production settings:
10% sampling plus every error trace, decision_wait 10 s), runs `clawdbot-otel demo --embedded` against
it for --duration seconds with OTEL_METRIC_EXPORT_INTERVAL=15000 (Prometheus' usual 15 s resolution),
waits for the pipelines to drain, and measures the growth of each store's data folder (blocks really
used, as `du` counts them). Each growth is extrapolated linearly to a day at the same load and printed
beside the design's "Storage Requirements" table, with the bytes per demo operation (an agent turn, a
cron or sessions call...) and how many operations a day fit in the design's budget.

What the numbers mean:
- Prometheus keeps the last ~2 hours in its head block: the write-ahead log plus memory-mapped head
  chunks. Those are larger per sample than the compacted 2-hour blocks that hold everything older, so
  the measured figure is an upper bound; the samples appended are printed too, with what they come to
  at 1.5 bytes per sample (the Prometheus documentation's 1-2 bytes per sample for compacted blocks).
  The TSDB also holds the stack's own scrapes (collector, Jaeger, VictoriaLogs, Alertmanager).
- VictoriaLogs compresses per day partition; a short run is dominated by fixed per-part overhead, so
  longer runs give smaller per-day figures.
- Traces: Jaeger's Badger folder (data/jaeger) when the stack keeps traces there; with the in-memory
  store nothing reaches the disk and the bench says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from clawdbot_otel.logfiles import log_store_classes
from clawdbot_otel.stack import Ports, StackInfo, build_all, down, up

DESIGN_MB_PER_DAY = {"metrics": 10.0, "logs DEBUG": 200.0, "logs INFO": 50.0, "traces": 20.0}
DRAIN_S = 20.0  # decision_wait 10 s + batch 1 s + the SDK's last exports + VictoriaLogs' flush
BYTES_PER_COMPACTED_SAMPLE = 1.5
DAY_S = 86_400


def used_bytes(folder: Path) -> int:
    """Bytes of disk blocks used by the files under `folder` (sparse preallocations count as used only)."""
    total = 0
    for path in folder.rglob("*") if folder.exists() else ():
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_blocks * 512
    return total


def stores(root: Path) -> dict[str, Path]:
    data = root / "data"
    folders = {"metrics": data / "prometheus"}
    for cls in log_store_classes():
        levels = ", ".join(cls.row.levels) or f"component {cls.row.component}"
        folders[f"logs {levels.replace(', ', '+')}"] = data / "victorialogs" / cls.row.destination
    folders["traces"] = data / "jaeger"
    return folders


def prom_value(info: StackInfo, promql: str) -> float:
    url = f"{info.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        result = json.load(resp)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def raw_samples(info: StackInfo, selector: str) -> int:
    """How many samples a range selector returns (count_over_time would drop the names and collide)."""
    url = f"{info.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': selector})}"
    with urllib.request.urlopen(url, timeout=60) as resp:
        return sum(len(series["values"]) for series in json.load(resp)["data"]["result"])


def run(duration_s: float, concurrency: int, port_offset: int, log_level: str) -> int:
    root = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    info = up(root=root, ports=Ports().shifted(port_offset), binaries=build_all())
    try:
        folders = stores(root)
        time.sleep(5)  # the servers' own start-up files
        before = {name: used_bytes(path) for name, path in folders.items()}
        samples_before = prom_value(info, "prometheus_tsdb_head_samples_appended_total")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
        env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": info.otlp_grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "clawdbot-gateway",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=production",
            "OTEL_METRIC_EXPORT_INTERVAL": "15000",
            "CLAWDBOT_OTEL_LOG_LEVEL": log_level,
        })
        started = time.monotonic()
        demo = subprocess.run(
            [sys.executable, "-m", "clawdbot_otel.cli", "demo", "--embedded", "--duration", str(duration_s),
             "--concurrency", str(concurrency), "--seed", "7"],
            env=env, capture_output=True, text=True, timeout=duration_s + 300, check=False)
        elapsed = time.monotonic() - started
        time.sleep(DRAIN_S)
        after = {name: used_bytes(path) for name, path in folders.items()}
        samples = prom_value(info, "prometheus_tsdb_head_samples_appended_total") - samples_before
        gateway_series = prom_value(info, 'count({job="clawdbot-gateway"})')
        gateway_samples = raw_samples(info, f'{{job="clawdbot-gateway"}}[{elapsed + DRAIN_S:.0f}s]')
        all_series = prom_value(info, "prometheus_tsdb_head_series")
    finally:
        down(root)
    summary = [line for line in (demo.stdout + demo.stderr).splitlines() if "ops" in line][-1:]
    print(f"\nload: `clawdbot-otel demo --embedded --concurrency {concurrency}` for {elapsed:.0f}s, log level "
          f"{log_level} (exit {demo.returncode}): {' '.join(summary)}")
    print(f"metrics: {samples:.0f} samples appended in all ({samples / elapsed:.1f}/s, {all_series:.0f} series with "
          f"the stack's own scrapes); the gateway's: {gateway_samples:.0f} samples of {gateway_series:.0f} series, "
          f"compacted at {BYTES_PER_COMPACTED_SAMPLE} B/sample "
          f"{gateway_samples / elapsed * DAY_S * BYTES_PER_COMPACTED_SAMPLE / 1e6:.1f} MB/day")
    ops = int(match[1]) if (match := re.search(r"ops (\d+)", " ".join(summary))) else 0
    print(f"\n{'store':<22}{'grew (bytes)':>14}{'B/op':>8}{'MB/day':>10}{'design MB/day':>15}{'ops/day in design':>19}")
    for name in folders:
        grown = after[name] - before[name]
        design = DESIGN_MB_PER_DAY.get(name)
        per_op = grown / ops if ops else 0.0
        fits = f"{design * 1e6 / per_op:19.0f}" if design and per_op else f"{'-':>19}"
        per_day = f"{grown / elapsed * DAY_S / 1e6:10.1f}"
        if name == "traces" and after[name] == 0:
            per_day = f"{'-':>10}"
            name = "traces (in memory)"
        print(f"{name:<22}{grown:>14}{per_op:8.0f}{per_day}{design if design is not None else '-':>15}{fits}")
    return demo.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of demo load (default 300)")
    parser.add_argument("--concurrency", type=int, default=4, help="demo clients (default 4)")
    parser.add_argument("--port-offset", type=int, default=1000,
                        help="shift of the bench stack's ports (default 1000: beside a stack on the defaults)")
    parser.add_argument("--log-level", default="DEBUG",
                        help="the gateway's CLAWDBOT_OTEL_LOG_LEVEL (default DEBUG, so every level is measured; "
                        "production's default is INFO)")
    args = parser.parse_args()
    return run(args.duration, args.concurrency, args.port_offset, args.log_level)


if __name__ == "__main__":
    sys.exit(main())

"""Capacity of tail sampling: one collector against two tiers with 2 and 3 samplers, driven by telemetrygen.

    .venv/bin/clawdbot-otel stack build          # once: also builds telemetrygen v0.161.0 into the cache
    .venv/bin/python bench/capacity_bench.py [--samplers 0,2,3] [--rates 6000,9000,12000,16000]
        [--step-seconds 30] [--port-offset 16000] [--json results.json]

Unattended, at most about 9 minutes with the defaults (a shape stops at its first rate that fails). For
each shape (0 = one collector doing everything, N = `stack up --samplers N`: a load-balancing collector in
front of N tail-sampling collectors) it starts a fresh native stack in a temporary directory (ports shifted
by --port-offset; the repository's configuration files unchanged: config.yaml's tail sampling with
num_traces 50,000, decision_wait 10 s, memory_limiter 1 GiB) and steps the offered load up. Each step runs
two telemetrygen processes (the collector-contrib load generator, not written here) for --step-seconds:
OTLP/gRPC traces of 1 + --child-spans spans, each span with --attributes string attributes; one process
sends --error-share of the spans with --status-code Error (every span of those traces carries ERROR), the
other the rest with no status. Then it waits decision_wait + 3 s for the last decisions and reads every
collector's own metrics.

A step is SUSTAINED when, over the step:
  * the first collector accepted every span telemetrygen produced ("lost": the generator's SDK drops spans
    when its queue of 2,048 is full, which is what backpressure from the receiver comes to; on a machine
    whose cores are all busy, a generator starved of CPU loses spans the same way: see the busy cores);
  * no span was refused (otelcol_receiver_refused_spans: memory_limiter) and none failed to be sent or
    queued by any exporter (otelcol_exporter_send_failed_spans, _enqueue_failed_spans: also the hop
    between the tiers);
  * otelcol_processor_tail_sampling_sampling_trace_dropped_too_early stayed 0 (num_traces was never
    full before a trace's decision_wait ran out);
  * the collectors' RSS levelled off: the peak of the step's last third is at most 15 % above the peak of
    its middle third (the buffer of decision_wait's traces is full after decision_wait, so the step must
    last at least 3 x decision_wait).

telemetrygen's rate limiter falls short of the offered rate when the cores are busy (it never catches up
a late span), so each step reports the rate produced and accepted, and the table gives the highest
ACCEPTED rate of a sustained step. Per step it reports the CPU seconds of the collector processes (utime +
stime from /proc, not wall cores) and spans per CPU-second ("spans/s per core"), each collector's peak RSS,
the peak of traces held in memory, the share of time the decision loops spent deciding, the CPU of
telemetrygen and Jaeger (they share the same cores), and the whole machine's busy cores (other work on a
shared machine shows there). The final table lists the highest sustained step of each shape, beside the
collector documentation's figure of about 9,000 spans/s per core with tail sampling (docs/scaling.md cites
it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clawdbot_otel import get_telemetry
from clawdbot_otel.stack import (
    Ports,
    StackError,
    down,
    find_binaries,
    find_telemetrygen,
    status,
    up,
)

DOC_SPANS_PER_CORE = 9000  # the collector documentation's tail-sampling figure (docs/scaling.md)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_TAIL = "otelcol_processor_tail_sampling_sampling_"
# What is read from each collector's own /metrics (Prometheus names of collector v0.161.0), each summed over
# its labels; counters may carry a `_total` suffix, the decision timer (ms) a `_milliseconds` unit suffix.
SERIES = {
    "accepted": ("otelcol_receiver_accepted_spans",),
    "refused": ("otelcol_receiver_refused_spans",),
    "send_failed": ("otelcol_exporter_send_failed_spans",),
    "enqueue_failed": ("otelcol_exporter_enqueue_failed_spans",),
    "dropped_too_early": (f"{_TAIL}trace_dropped_too_early",),
    "traces_on_memory": (f"{_TAIL}traces_on_memory",),
    # The decision loop is one goroutine: while a tick decides the due traces, incoming spans wait.
    "decision_ms": (f"{_TAIL}decision_timer_latency_sum", f"{_TAIL}decision_timer_latency_milliseconds_sum"),
}


# ---------------------------------------------------------------------------------------- measurements


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children: the telemetrygen runs (the stack's servers are reaped only
    when the stack is stopped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_series(metrics_port: int) -> dict[str, float]:
    """The SERIES of one collector (absent = 0)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals = dict.fromkeys(SERIES, 0.0)
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        for key, names in SERIES.items():
            if name in names or name.removesuffix("_total") in names:
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


@dataclasses.dataclass(frozen=True)
class Collector:
    name: str
    pid: int
    metrics_port: int


@dataclasses.dataclass
class Step:
    shape: str
    rate: int
    seconds: float
    generated: int = 0
    accepted: float = 0.0
    accepted_tier2: float = 0.0
    refused: float = 0.0
    send_failed: float = 0.0
    dropped_too_early: float = 0.0
    peak_traces_on_memory: float = 0.0
    decision_busy: float = 0.0  # share of the window the samplers' decision loops spent in ticks (mean per sampler)
    collector_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_rss_mib: dict[str, float] = dataclasses.field(default_factory=dict)
    rss_levelled: bool = True
    generator_cpu_s: float = 0.0
    jaeger_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    window_s: float = 0.0

    @property
    def lost(self) -> float:
        """Spans telemetrygen produced that the first collector never took (the generator's SDK drops them
        when the receiver pushes back)."""
        return self.generated - self.accepted - self.refused

    @property
    def spans_per_cpu_s(self) -> float:
        cpu = sum(self.collector_cpu_s.values())
        return self.accepted / cpu if cpu else 0.0

    def failures(self) -> list[str]:
        reasons = []
        if self.lost > 0:
            reasons.append(f"{self.lost:.0f} spans lost before the first collector")
        for what, value in (("refused", self.refused), ("send/enqueue failed", self.send_failed),
                            ("dropped_too_early", self.dropped_too_early)):
            if value:
                reasons.append(f"{value:.0f} {what}")
        if self.accepted_tier2 and self.accepted_tier2 < self.accepted:
            reasons.append(f"{self.accepted - self.accepted_tier2:.0f} spans missing between the tiers")
        if not self.rss_levelled:
            reasons.append("RSS still growing at the end of the step")
        return reasons


# ------------------------------------------------------------------------------------------------ load


class LoadGenerator:
    """Two telemetrygen processes at a combined span rate: one sends error traces, one plain traces."""

    def __init__(self, binary: Path, endpoint: str, *, child_spans: int, attributes: int, error_share: float,
                 worker_rate: float, log_dir: Path) -> None:
        self.binary = binary
        self.endpoint = endpoint
        self.child_spans = child_spans
        self.attributes = attributes
        self.error_share = error_share
        self.worker_rate = worker_rate
        self.log_dir = log_dir

    def _argv(self, rate: float, workers: int, seconds: float, status_code: str, service: str) -> list[str]:
        return [
            str(self.binary), "traces",
            "--otlp-endpoint", self.endpoint, "--otlp-insecure",
            "--duration", f"{seconds:g}s",
            "--workers", str(workers),
            "--rate", f"{rate / workers:.3f}",  # per worker, in spans/s (its limiter waits before each span)
            "--child-spans", str(self.child_spans),
            "--status-code", status_code,
            "--batch-size", "512",  # the OTel SDKs' default export batch (telemetrygen's own default: 100)
            "--service", service,
            "--allow-export-failures",  # a refusal is counted by the collector, the run goes on
            *(arg for i in range(self.attributes)
              for arg in ("--telemetry-attributes", f'bench.attribute_{i}="value {i} of a span"')),
        ]

    def start(self, rate: int, seconds: float, tag: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
        errors = rate * self.error_share
        runs = [(rate - errors, "Unset", "plain"), (errors, "Error", "error")]
        procs = []
        for share, code, kind in runs:
            if share <= 0:
                continue
            # Each worker's limiter sleeps between spans; above a few hundred spans/s a worker falls short of
            # its rate (timer granularity), so the load is spread over enough workers.
            workers = math.ceil(share / self.worker_rate)
            log = self.log_dir / f"telemetrygen-{tag}-{kind}.log"
            with log.open("wb") as out:
                argv = self._argv(share, workers, seconds, code, f"capacity-bench-{kind}")
                procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL), log))
        return procs

    @staticmethod
    def generated_spans(log: Path, spans_per_trace: int) -> int:
        """Spans one run produced: its workers' "traces generated" lines x spans per trace."""
        traces = re.findall(r'traces generated.*?"traces":\s*(\d+)', log.read_text(errors="replace"))
        return sum(int(t) for t in traces) * spans_per_trace


# ---------------------------------------------------------------------------------------------- bench


def collectors_of(root: Path) -> tuple[list[Collector], int]:
    """The stack's collectors (tier 1 first) and Jaeger's pid."""
    servers = status(root)
    found = [Collector(s.name, s.pid or 0, s.ports["collector_metrics"]) for s in servers
             if s.name.startswith("otel-") and s.pid]
    jaeger = next(s.pid for s in servers if s.name == "jaeger" and s.pid)
    return sorted(found, key=lambda c: c.name != "otel-collector"), jaeger


def run_step(shape: str, rate: int, *, seconds: float, settle: float, collectors: list[Collector], jaeger: int,
             load: LoadGenerator) -> Step:
    step = Step(shape, rate, seconds)
    before = {c.name: read_series(c.metrics_port) for c in collectors}
    cpu0 = {c.name: cpu_seconds(c.pid) for c in collectors}
    jaeger0, children0 = cpu_seconds(jaeger), children_cpu_seconds()
    machine0, t0 = machine_busy_seconds(), time.monotonic()
    procs = load.start(rate, seconds, f"{shape}-{rate}")
    rss: list[tuple[float, dict[str, int]]] = []
    while any(p.poll() is None for p, _ in procs):
        rss.append((time.monotonic() - t0, {c.name: rss_bytes(c.pid) for c in collectors}))
        on_memory = sum(read_series(c.metrics_port)["traces_on_memory"] for c in collectors)
        step.peak_traces_on_memory = max(step.peak_traces_on_memory, on_memory)
        if time.monotonic() - t0 > seconds + 60:
            for p, _ in procs:
                p.kill()
        time.sleep(1.0)
    for p, _ in procs:
        p.wait()
    time.sleep(settle)  # decision_wait + batch timeout: the step's last traces are decided
    after = {c.name: read_series(c.metrics_port) for c in collectors}
    step.window_s = time.monotonic() - t0
    step.machine_busy_s = machine_busy_seconds() - machine0
    step.generator_cpu_s = children_cpu_seconds() - children0
    step.jaeger_cpu_s = cpu_seconds(jaeger) - jaeger0
    step.collector_cpu_s = {c.name: cpu_seconds(c.pid) - cpu0[c.name] for c in collectors}
    step.generated = sum(load.generated_spans(log, load.child_spans + 1) for _, log in procs)
    delta = {name: {k: after[name][k] - before[name][k] for k in SERIES} for name in after}
    tier1 = collectors[0].name
    samplers = [d for n, d in delta.items() if n != tier1] or [delta[tier1]]
    step.decision_busy = sum(d["decision_ms"] for d in samplers) / 1000 / step.window_s / len(samplers)
    step.accepted = delta[tier1]["accepted"]
    step.accepted_tier2 = sum(d["accepted"] for n, d in delta.items() if n != tier1)
    step.refused = sum(d["refused"] for d in delta.values())
    step.send_failed = sum(d["send_failed"] + d["enqueue_failed"] for d in delta.values())
    step.dropped_too_early = sum(d["dropped_too_early"] for d in delta.values())
    step.peak_rss_mib = {c.name: max((r[c.name] for _, r in rss), default=0) / 2**20 for c in collectors}
    step.rss_levelled = rss_levelled(rss, seconds)
    return step


def rss_levelled(samples: list[tuple[float, dict[str, int]]], seconds: float) -> bool:
    """Each collector's RSS peak in the last third of the step is within 15 % of its middle-third peak (Go's
    heap target still moves a little once decision_wait's buffer is full)."""
    middle = [r for t, r in samples if seconds / 3 <= t < 2 * seconds / 3]
    last = [r for t, r in samples if 2 * seconds / 3 <= t <= seconds]
    if not middle or not last:
        return True
    return all(max(r[n] for r in last) <= 1.15 * max(r[n] for r in middle) for n in middle[0])


def describe(step: Step) -> str:
    cores = sum(step.collector_cpu_s.values()) / step.window_s
    rss = ", ".join(f"{n} {m:.0f}" for n, m in step.peak_rss_mib.items())
    verdict = "sustained" if not step.failures() else "NOT sustained: " + "; ".join(step.failures())
    return (f"  {step.rate:>6} spans/s offered: generated {step.generated / step.seconds:,.0f}/s, accepted "
            f"{step.accepted / step.seconds:,.0f}/s, collectors "
            f"{sum(step.collector_cpu_s.values()):.1f} CPU s ({cores:.2f} cores over {step.window_s:.0f} s) = "
            f"{step.spans_per_cpu_s:,.0f} spans per CPU-second; generator {step.generator_cpu_s:.1f} CPU s, "
            f"Jaeger {step.jaeger_cpu_s:.1f}, machine {step.machine_busy_s / step.window_s:.2f} busy cores; "
            f"peak RSS MiB {rss}; peak traces in memory {step.peak_traces_on_memory:,.0f}; decision ticks "
            f"{step.decision_busy:.0%} of the time; {verdict}")


def bench_shape(samplers: int, rates: list[int], args: argparse.Namespace, tmp: Path) -> list[Step]:
    shape = "1 collector" if samplers == 0 else f"tier 1 + {samplers} samplers"
    root = tmp / f"stack-{samplers}"
    print(f"\n== {shape}", flush=True)
    up(root=root, ports=Ports().shifted(args.port_offset), binaries=find_binaries(), samplers=samplers,
       collector_extra_env={"CLAWDBOT_OTEL_DECISION_WAIT": f"{args.decision_wait:g}s"}, timeout=120,
       progress=lambda line: None)
    steps: list[Step] = []
    try:
        collectors, jaeger = collectors_of(root)
        endpoint = f"127.0.0.1:{Ports().shifted(args.port_offset).otlp_grpc}"
        load = LoadGenerator(find_telemetrygen(), endpoint, child_spans=args.child_spans, attributes=args.attributes,
                             error_share=args.error_share, worker_rate=args.worker_rate, log_dir=root / "logs")
        for rate in rates:
            step = run_step(shape, rate, seconds=args.step_seconds, settle=args.decision_wait + 3,
                            collectors=collectors, jaeger=jaeger, load=load)
            steps.append(step)
            print(describe(step), flush=True)
            if step.failures():
                break
    finally:
        down(root, progress=lambda line: None)
    return steps


def summary(results: Mapping[int, list[Step]]) -> str:
    lines = [
        "| shape | highest sustained rate (spans/s) | collector CPU (cores) | spans/s per core | tier 1 share of "
        "collector CPU | peak RSS per collector (MiB) | dropped_too_early | refused | generator CPU (cores) | "
        "Jaeger CPU (cores) | machine busy (cores) | first failing rate: why |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for samplers, steps in results.items():
        ok = [s for s in steps if not s.failures()]
        failed = next((s for s in steps if s.failures()), None)
        why = f"{failed.rate}: {'; '.join(failed.failures())}" if failed else "none failed (raise --rates)"
        shape = "1 collector" if samplers == 0 else f"tier 1 + {samplers} samplers"
        if not ok:
            lines.append(f"| {shape} | none | | | | | | | | | | {why} |")
            continue
        best = ok[-1]
        cpu = sum(best.collector_cpu_s.values())
        tier1 = best.collector_cpu_s.get("otel-collector", 0.0)
        share = f"{tier1 / cpu:.0%}" if samplers else "-"
        rss = " / ".join(f"{m:.0f}" for m in best.peak_rss_mib.values())
        lines.append(
            f"| {shape} | {best.accepted / best.seconds:,.0f} | {cpu / best.window_s:.2f} "
            f"| {best.spans_per_cpu_s:,.0f} "
            f"| {share} | {rss} | {best.dropped_too_early:.0f} | {best.refused:.0f} | "
            f"{best.generator_cpu_s / best.window_s:.2f} | {best.jaeger_cpu_s / best.window_s:.2f} | "
            f"{best.machine_busy_s / best.window_s:.2f} | {why} |")
    lines.append(f"\nThe collector documentation: about {DOC_SPANS_PER_CORE:,} spans/s per core with tail sampling.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samplers", default="0,2,3",
                        help="shapes to measure: 0 = one collector, N = tier 1 + N samplers (default 0,2,3)")
    parser.add_argument("--rates", default="6000,9000,12000,16000",
                        help="offered spans/s, stepped up in this order; a shape stops at its first failing rate "
                             "(default 6000,9000,12000,16000)")
    parser.add_argument("--step-seconds", type=float, default=30.0,
                        help="load per step (default 30; at least 3 x decision_wait, for the RSS check)")
    parser.add_argument("--decision-wait", type=float, default=10.0,
                        help="tail sampling decision_wait in seconds, as CLAWDBOT_OTEL_DECISION_WAIT (default 10, "
                             "the production default)")
    parser.add_argument("--child-spans", type=int, default=4, help="child spans per trace (default 4: 5 spans a trace)")
    parser.add_argument("--attributes", type=int, default=10,
                        help="string attributes added to every span, besides telemetrygen's two (default 10: about "
                             "what a gateway span carries, 4 common + 4 to 20 per category)")
    parser.add_argument("--error-share", type=float, default=0.1,
                        help="share of traces with ERROR status (default 0.1)")
    parser.add_argument("--worker-rate", type=float, default=100.0,
                        help="spans/s per telemetrygen worker; the workers are rate / this (default 100)")
    parser.add_argument("--port-offset", type=int, default=16000,
                        help="ports of the bench's stacks: the stack's defaults + N (default 16000)")
    parser.add_argument("--json", type=Path, default=None, help="also write every step's measurements here")
    args = parser.parse_args(argv)
    shapes = [int(s) for s in args.samplers.split(",")]
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[int, list[Step]] = {}
    started = time.monotonic()
    get_telemetry().bind(log_sinks=[])  # the stacks' start/stop audit records would interleave with the table
    try:
        find_telemetrygen()
        with tempfile.TemporaryDirectory(prefix="capacity-bench-") as tmp:
            for samplers in shapes:
                results[samplers] = bench_shape(samplers, rates, args, Path(tmp))
    except StackError as exc:
        print(f"capacity_bench: {exc}", file=sys.stderr)
        return 1
    print(f"\n{summary(results)}\n(bench took {time.monotonic() - started:.0f} s; {os.cpu_count()} cores)")
    if args.json:
        data: dict[str, Any] = {str(n): [dataclasses.asdict(s) | {"failures": s.failures()} for s in steps]
                                for n, steps in results.items()}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Faults on the real stack under a steady, bounded load (docs/faults.md): backends stopped for 30 s, the
collector SIGKILLed, a full disk under a log store instance, `stack down && stack up`.

The tests stop, kill and restart servers, so they run a stack of their own (its own directory, ports
shifted FAULT_SHIFT past the session stack's) and leave the session stack alone. The load comes from a
host application process (fault_host.py) using the library as an application does. Every count is
exact: what the host sent against what each store holds, printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawdbot_otel.stack import Ports, StackError, StackInfo, build_all, down, start_server, status, stop_server, up

from .conftest import DECISION_WAIT_S, SAMPLING_PERCENTAGE, TEST_PORT_OFFSET, metric_sum
from .faults import (
    LEVELS,
    Tick,
    expected_logs,
    host_app,
    jaeger_trace_ids,
    log_levels,
    metric_samples,
    prom_scalar,
    settle,
    worst_hole,
)

pytestmark = pytest.mark.stack

# Port shifts past the session stack: +100 the second collector, +200 the launcher test, +400 the trace
# restart test.
FAULT_SHIFT = 300
OUTAGE_S = 32.0
# Each of these is down for OUTAGE_S at the same time: the pipelines are independent, so one outage window
# tests them all. The log store: two storage instances (INFO; WARN and ERROR) and the query node.
STOPPED = ("jaeger", "prometheus", "victorialogs-info", "victorialogs-error", "victorialogs")
# What the collector holds in memory only, as the host sends it: a span waits up to the SDK's export delay
# (fault_host: 0.5 s), then decision_wait in the tail sampler, then up to the batch processor's 1 s.
SDK_DELAY_S, BATCH_TIMEOUT_S = 0.5, 1.0
IN_MEMORY_S = SDK_DELAY_S + DECISION_WAIT_S + BATCH_TIMEOUT_S
FLOW_LIMIT_S = 10.0
FULL_DISK_CLASS = "victorialogs-debug"
TMPFS_BYTES = 64 * 1024 * 1024
LEFT_FREE_BYTES = 2 * 1024 * 1024  # under VictoriaLogs' -storage.minFreeDiskSpaceBytes (10 MB by default)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _up(root: Path) -> StackInfo:
    try:
        return up(root=root, ports=Ports().shifted(TEST_PORT_OFFSET + FAULT_SHIFT), binaries=build_all(progress=_progress),
                  collector_extra_env={"CLAWDBOT_OTEL_SAMPLING_PERCENTAGE": str(SAMPLING_PERCENTAGE),
                                       "CLAWDBOT_OTEL_DECISION_WAIT": f"{DECISION_WAIT_S}s"},
                  timeout=180, progress=_progress)
    except StackError as exc:
        pytest.fail(f"the fault tests' stack could not be started: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    root = tmp_path_factory.mktemp("fault-stack")
    info = _up(root)
    try:
        yield info
    finally:
        down(root, progress=_progress)


def _service(kind: str) -> str:
    return f"fault-{kind}-{uuid.uuid4().hex[:6]}"


def test_backends_stopped_30s_under_load_lose_nothing(fault_stack: StackInfo, tmp_path: Path) -> None:
    info, service = fault_stack, _service("outage")
    down_at: dict[str, float] = {}
    back_at: dict[str, float] = {}
    with host_app(info, service, tmp_path, tick_s=0.2) as host:
        time.sleep(5)
        outage_start = time.time()
        for name in STOPPED:
            stop_server(name, info.stack_dir, progress=_progress)
            down_at[name] = time.time()
        time.sleep(OUTAGE_S)
        for name in STOPPED:
            start_server(name, info.stack_dir, progress=_progress)
            back_at[name] = time.time()
        time.sleep(5)
    summary = host.stop()
    ticks = host.ticks()
    assert summary.raised == [] and summary.exit_code == 0
    outage = {name: back_at[name] - down_at[name] for name in STOPPED}
    assert min(outage.values()) >= 30, outage

    # Traces: every one, before, during and after the outage (Jaeger keeps what it held in Badger).
    in_gap = [t for t in ticks if down_at["jaeger"] <= t.at <= back_at["jaeger"]]
    found, waited = settle(lambda: jaeger_trace_ids(info, service), lambda ids: {t.trace_id for t in ticks} <= ids, 90)
    missing = [t for t in ticks if t.trace_id not in found]
    print(f"\njaeger down {outage['jaeger']:.1f}s: error traces sent in the outage {len(in_gap)}, found "
          f"{sum(t.trace_id in found for t in in_gap)}; sent in all {len(ticks)}, found {len(ticks) - len(missing)} "
          f"({waited:.0f}s after the load ended)")
    assert not missing, f"{len(missing)} error traces never reached Jaeger, sent at {[round(t.at - outage_start, 1) for t in missing]}"

    # Logs: every line, before, during and after the outage, searchable through the query node.
    want = expected_logs(service, ticks)
    stored, waited = settle(lambda: log_levels(info.victorialogs_url, service), lambda got: not want - got, 90)
    lost, doubled = want - stored, sum(stored[m] - 1 for m in want if stored[m] > 1)
    down_logs = " ".join(f"{n} {outage[n]:.1f}s" for n in STOPPED if n.startswith("victorialogs"))
    print(f"log store down ({down_logs}): log lines sent {sum(want.values())} "
          f"({len(ticks)} per level {', '.join(LEVELS)}), found {sum((stored & want).values())}, "
          f"stored twice {doubled} ({waited:.0f}s after the load ended)")
    assert not lost, f"{sum(lost.values())} log lines not searchable, e.g. {sorted(lost)[:5]}"

    # Metrics: each series' raw samples across the outage, no hole longer than a few export intervals.
    window = time.time() - ticks[0].at + 5
    samples, _ = settle(lambda: metric_samples(info, service, window),
                        lambda s: bool(s) and min(times[-1] for times in s.values()) >= ticks[-1].at - 3, 60)
    hole, series = worst_hole(samples)
    print(f"prometheus down {outage['prometheus']:.1f}s: {len(samples)} series of the host, worst hole {hole:.1f}s "
          f"({series})")
    assert samples, "no series of the host in Prometheus"
    partial = {name: (round(times[0] - down_at["prometheus"], 1), round(times[-1] - back_at["prometheus"], 1))
               for name, times in samples.items()
               if not times[0] < down_at["prometheus"] < back_at["prometheus"] < times[-1]}
    assert not partial, f"series not spanning the outage (first, last sample from its start, end): {partial}"
    assert hole <= 5.0, f"a hole of {hole:.1f}s in {series} (outage {outage['prometheus']:.1f}s)"


def test_collector_sigkill_under_load(fault_stack: StackInfo, tmp_path: Path) -> None:
    info, service = fault_stack, _service("kill")
    with host_app(info, service, tmp_path, tick_s=0.1) as host:
        time.sleep(6)
        [pid] = [s.pid for s in status(info.stack_dir) if s.name == "otel-collector"]
        assert pid
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        # As a supervisor restarts it: once the whole process is gone (its main thread turns zombie before
        # the other threads have closed its sockets, so wait for the port too).
        settle(lambda: [s.running for s in status(info.stack_dir) if s.name == "otel-collector"] == [False]
               and _port_free(info.ports.otlp_grpc), bool, 10, 0.02)
        start_server("otel-collector", info.stack_dir, progress=_progress)
        ready_at = time.time()
        first: Tick = settle(lambda: [t for t in host.ticks() if t.at > ready_at], bool, 10, 0.05)[0][0]
        flow: dict[str, float] = {}

        def arrived() -> dict[str, float]:
            since = time.time() - ready_at
            if "trace" not in flow and first.trace_id in jaeger_trace_ids(info, service):
                flow["trace"] = since
            if "log" not in flow and log_levels(info.victorialogs_url, service)[f"{service} tick {first.seq} INFO"]:
                flow["log"] = since
            if "metric" not in flow and prom_scalar(info, f'max(timestamp(gateway_requests_total{{job="{service}"}}))') > ready_at:
                flow["metric"] = since
            return flow

        settle(arrived, lambda f: len(f) == 3, 20, 0.25)
        time.sleep(3)
    summary = host.stop()
    ticks = host.ticks()
    print(f"\ncollector SIGKILLed and ready again after {ready_at - killed_at:.1f}s; new telemetry from the host "
          f"reached the stores after: " + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(flow.items())))
    print(f"host: {summary.ticks} ticks, raised {len(summary.raised)}, worst event-loop stall "
          f"{summary.worst_stall_s * 1000:.0f} ms, exit code {summary.exit_code}")
    assert summary.raised == [] and summary.exit_code == 0
    assert summary.worst_stall_s < 1.0, "the host's event loop froze"
    assert set(flow) == {"trace", "log", "metric"} and max(flow.values()) <= FLOW_LIMIT_S, flow

    # What the kill cost: whatever the collector held in memory only. Everything sent after the restart,
    # and everything older than the in-memory window, must be there.
    after = [t for t in ticks if t.at > killed_at]
    found, _ = settle(lambda: jaeger_trace_ids(info, service), lambda ids: {t.trace_id for t in after} <= ids, 60)
    lost = [t for t in ticks if t.trace_id not in found]
    window = (f"decision_wait {DECISION_WAIT_S:.0f}s + batch {BATCH_TIMEOUT_S:.0f}s + SDK export delay "
              f"{SDK_DELAY_S}s")
    print(f"traces: sent {len(ticks)} error traces, found {len(ticks) - len(lost)}, lost {len(lost)}: sent "
          f"{', '.join(f'{t.at - killed_at:+.1f}s' for t in lost[:3])}{' ...' if len(lost) > 3 else ''} "
          f"from the kill (in memory: {window} = {IN_MEMORY_S:.1f}s)")
    assert all(killed_at - IN_MEMORY_S - 1.0 <= t.at <= killed_at for t in lost), [t.at - killed_at for t in lost]
    want = expected_logs(service, ticks)
    stored, _ = settle(lambda: log_levels(info.victorialogs_url, service),
                       lambda got: not expected_logs(service, after) - got, 60)
    lost_logs = {t for t in ticks for level in LEVELS if not stored[f"{service} tick {t.seq} {level}"]}
    print(f"logs: sent {sum(want.values())} lines, found {sum((stored & want).values())}, lost "
          f"{sum((want - stored).values())} of {len(lost_logs)} ticks sent "
          f"{', '.join(f'{t.at - killed_at:+.1f}s' for t in sorted(lost_logs, key=lambda t: t.at))} from the kill")
    assert all(killed_at - SDK_DELAY_S - BATCH_TIMEOUT_S - 1.0 <= t.at <= killed_at for t in lost_logs)
    total, _ = settle(lambda: prom_scalar(info, f'sum(gateway_requests_total{{job="{service}"}})'), lambda v: v >= len(ticks), 30)
    print(f"metrics: gateway_requests_total {total:.0f} for {len(ticks)} requests (cumulative: counts survive)")
    assert total == len(ticks)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the launcher and Go's listeners do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_full_disk_under_a_log_store_instance(fault_stack: StackInfo, tmp_path: Path) -> None:
    """The DEBUG log store instance on a 64 MB tmpfs, filled to 2 MB free: it refuses, the collector keeps the
    records in its persistent queue (another disk), and they are stored once space returns."""
    info, service = fault_stack, _service("disk")
    [server] = [s for s in status(info.stack_dir) if s.name == FULL_DISK_CLASS]
    assert server.data_dir and server.ports
    data_dir, url = Path(server.data_dir), f"http://127.0.0.1:{next(iter(server.ports.values()))}"
    collector = f"http://127.0.0.1:{info.ports.collector_metrics}"
    stop_server(FULL_DISK_CLASS, info.stack_dir, progress=_progress)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(data_dir)], check=True)
    try:
        start_server(FULL_DISK_CLASS, info.stack_dir, progress=_progress)
        free = os.statvfs(data_dir).f_bavail * os.statvfs(data_dir).f_frsize
        filler = data_dir / "filler"
        with filler.open("wb") as out:
            out.truncate(0)
            for _ in range((free - LEFT_FREE_BYTES) // (1 << 20)):
                out.write(b"\0" * (1 << 20))
        # VictoriaLogs checks the free space every second: the load starts once it has seen the full disk.
        settle(lambda: metric_sum(url, "vl_storage_is_read_only"), lambda flag: flag == 1, 10, 0.2)
        requests_before = metric_sum(url, 'vl_http_requests_total{path="/insert/opentelemetry')
        with host_app(info, service, tmp_path, tick_s=0.2) as host:
            time.sleep(8)
            full = {
                "read_only": metric_sum(url, "vl_storage_is_read_only"),
                "refused": metric_sum(url, 'vl_http_requests_total{path="/insert/opentelemetry') - requests_before,
                "stored": metric_sum(url, "vl_rows_ingested_total"),
                "queued": metric_sum(collector, 'otelcol_exporter_queue_size{data_type="logs",exporter="otlp_http/debug"}'),
            }
            assert [s.running for s in status(info.stack_dir) if s.name == FULL_DISK_CLASS] == [True]
            filler.unlink()
            freed_at = time.time()
            time.sleep(2)
        summary = host.stop()
        ticks = host.ticks()
        want = expected_logs(service, ticks, ("DEBUG",))
        stored, waited = settle(lambda: log_levels(url, service), lambda got: not want - got, 60)
        failed = metric_sum(collector, 'otelcol_exporter_send_failed_log_records_total{exporter="otlp_http/debug"')
        print(f"\ndisk full under {FULL_DISK_CLASS} ({os.statvfs(data_dir).f_blocks * os.statvfs(data_dir).f_frsize >> 20} MB "
              f"tmpfs, {LEFT_FREE_BYTES >> 20} MB left): read-only {full['read_only']:.0f}, refused "
              f"{full['refused']:.0f} insert requests (HTTP 429), stored {full['stored']:.0f} rows, collector "
              f"queue {full['queued']:.0f} batches, send failures (dropped) {failed:.0f}; space back -> "
              f"DEBUG lines sent {sum(want.values())}, stored {sum((stored & want).values())} "
              f"{time.time() - freed_at:.0f}s after; host raised {len(summary.raised)}")
        assert full["read_only"] == 1 and full["refused"] > 0 and full["stored"] == 0 and full["queued"] > 0
        assert failed == 0 and summary.raised == []
        assert not want - stored, f"{sum((want - stored).values())} DEBUG lines never stored ({waited:.0f}s)"
    finally:
        stop_server(FULL_DISK_CLASS, info.stack_dir, progress=_progress)
        subprocess.run(["umount", str(data_dir)], check=True)
        start_server(FULL_DISK_CLASS, info.stack_dir, progress=_progress)


def test_stack_down_and_up_keeps_logs_metrics_and_traces(fault_stack: StackInfo, tmp_path: Path) -> None:
    info, service = fault_stack, _service("restart")
    with host_app(info, service, tmp_path, tick_s=0.2) as host:
        time.sleep(4)
    host.stop()
    ticks = host.ticks()
    want_logs, want_traces = expected_logs(service, ticks), {t.trace_id for t in ticks}
    window = time.time() - ticks[0].at + 60

    def everything() -> tuple[set[str], int, int]:
        samples = metric_samples(info, service, window)
        return jaeger_trace_ids(info, service), sum((log_levels(info.victorialogs_url, service) & want_logs).values()), \
            sum(len(t) for t in samples.values())

    before, _ = settle(everything, lambda r: r[0] >= want_traces and r[1] == sum(want_logs.values()), 60)
    assert before[0] >= want_traces and before[1] == sum(want_logs.values()) and before[2] > 0, before[1:]
    down(info.stack_dir, progress=_progress)
    _up(info.stack_dir)
    after = everything()
    print(f"\nstack down && stack up: traces {len(after[0] & want_traces)}/{len(want_traces)}, log lines "
          f"{after[1]}/{sum(want_logs.values())}, metric samples {after[2]}/{before[2]}")
    assert after[1] == before[1] and after[2] == before[2]
    assert after[0] >= want_traces

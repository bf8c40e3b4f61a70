"""Tools of the fault tests (test_faults.py): the host application under load, and exact counts of what each
store holds of what it sent.

The host is a process of its own (fault_host.py) that uses the library as an application does:
`setup()` from OTEL_* variables, then the facade. Every tick is one error trace (the tail sampler keeps
every one, so each must reach Jaeger), one log line per level, and a counter and histogram sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clawdbot_otel.stack import StackInfo

from .conftest import http_json
from .fault_host import LEVELS, message

__all__ = [
    "LEVELS",
    "Host",
    "HostSummary",
    "Tick",
    "expected_logs",
    "host_app",
    "jaeger_trace_ids",
    "log_levels",
    "metric_samples",
    "prom_scalar",
    "settle",
    "worst_hole",
]

_HOST = Path(__file__).with_name("fault_host.py")


@dataclasses.dataclass(frozen=True)
class Tick:
    seq: int
    at: float  # epoch seconds when its span ended (queued for export from then on)
    trace_id: str


@dataclasses.dataclass(frozen=True)
class HostSummary:
    ticks: int
    worst_stall_s: float
    raised: list[str]
    exit_code: int


class Host:
    """fault_host.py running against a stack's collector (OTLP/gRPC), production settings, fast exports."""

    def __init__(self, info: StackInfo, service: str, tmp: Path, tick_s: float, max_s: float) -> None:
        self.service = service
        self.out = tmp / f"{service}.jsonl"
        self.log = tmp / f"{service}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
        env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": info.otlp_grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": service,
            "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name=production,service.instance.id={service}",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "OTEL_BLRP_SCHEDULE_DELAY": "500",
            "CLAWDBOT_OTEL_LOG_LEVEL": "DEBUG",
        })
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(_HOST), str(self.out), str(tick_s), str(max_s)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.summary: HostSummary | None = None

    def ticks(self) -> list[Tick]:
        if not self.out.exists():
            return []
        rows = [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]
        return [Tick(r["seq"], r["at"], r["trace_id"]) for r in rows if "seq" in r]

    def wait_first_tick(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ticks():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the host application sent nothing ({self.proc.poll()}):\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> HostSummary:
        """SIGTERM: the host stops its loop, flushes (`shutdown()`) and writes its summary."""
        if self.summary is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            rows = [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]
            found = [r["summary"] for r in rows if "summary" in r]
            if not found:
                pytest.fail(f"the host application ended ({code}) without its summary:\n{self.log.read_text()[-3000:]}")
            self.summary = HostSummary(found[0]["ticks"], found[0]["worst_stall_s"], found[0]["raised"], code)
        return self.summary


@contextlib.contextmanager
def host_app(info: StackInfo, service: str, tmp: Path, *, tick_s: float, max_s: float = 240) -> Iterator[Host]:
    host = Host(info, service, tmp, tick_s, max_s)
    try:
        host.wait_first_tick()
        yield host
    finally:
        host.stop()


def jaeger_trace_ids(info: StackInfo, service: str) -> set[str]:
    """Ids of the traces Jaeger holds for `service` (none while Jaeger is unreachable)."""
    try:
        status, body = http_json(f"{info.jaeger_url}/api/traces",
                                 {"service": service, "limit": 100_000, "lookback": "1h"}, timeout=60)
    except OSError:
        return set()
    return {t["traceID"] for t in body["data"] or []} if status == 200 else set()


def log_levels(base_url: str, service: str) -> Counter[str]:
    """How many records of each message `service` has in a VictoriaLogs instance (query node or storage)."""
    query = f'"service.name":="{service}" | fields _msg'
    data = urllib.parse.urlencode({"query": query, "limit": "10000000"}).encode()
    req = urllib.request.Request(f"{base_url}/select/logsql/query", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            lines = resp.read().decode().splitlines()
    except OSError:
        return Counter()
    return Counter(json.loads(line)["_msg"] for line in lines if line.strip())


def expected_logs(service: str, ticks: list[Tick], levels: tuple[str, ...] = LEVELS) -> Counter[str]:
    return Counter(message(service, t.seq, level) for t in ticks for level in levels)


def metric_samples(info: StackInfo, service: str, window_s: float) -> dict[str, list[float]]:
    """Each series `service` sent (labels as text) -> its raw sample times over the last `window_s` (a range
    selector returns the samples as stored, without the query's 5-minute lookback filling holes).
    Recording-rule outputs (`level:metric:op`, evaluated by Prometheus itself) are left out."""
    try:
        status, body = http_json(f"{info.prometheus_url}/api/v1/query",
                                 {"query": f'{{job="{service}",__name__!~".*:.*"}}[{int(window_s) + 1}s]'})
    except OSError:
        return {}
    if status != 200:
        return {}
    return {",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())): [float(t) for t, _ in s["values"]]
            for s in body["data"]["result"]}


def prom_scalar(info: StackInfo, promql: str) -> float:
    """The value of a query that gives one number (0 when it gives nothing or Prometheus is away)."""
    try:
        status, body = http_json(f"{info.prometheus_url}/api/v1/query", {"query": promql})
    except OSError:
        return 0.0
    result = body["data"]["result"] if status == 200 else []
    return float(result[0]["value"][1]) if result else 0.0


def worst_hole(samples: dict[str, list[float]]) -> tuple[float, str]:
    """The longest time between two consecutive samples of one series, and that series."""
    holes = [(b - a, name) for name, times in samples.items() for a, b in itertools.pairwise(times)]
    return max(holes, default=(0.0, ""))


def settle(check: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float, interval_s: float = 1.0
           ) -> tuple[Any, float]:
    """Poll `check()` until `done(result)` or `timeout_s`; the last result and the seconds it took. Unlike
    conftest's wait_for this does not fail: the caller asserts on the counts, which say more."""
    started = time.monotonic()
    while True:
        result = check()
        if done(result) or time.monotonic() - started > timeout_s:
            return result, time.monotonic() - started
        time.sleep(interval_s)

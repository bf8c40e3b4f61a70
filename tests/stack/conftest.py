"""Session fixtures for the end-to-end stack tests.

`stack` builds the servers (reusing the cache, so seconds when built; the first build takes long) and
starts the whole native stack on a shifted port set with its own temporary state/data directory, so it
never clashes with a stack the user runs on the default ports. It FAILS (never skips) when the stack
cannot be built or started.

Environment:
  CLAWDBOT_OTEL_TEST_PORT_OFFSET  port shift of the test stack (default 15000: 4317 -> 19317, ...). Every
                                  shifted port (plus the +300 the tests add: a second collector at +100,
                                  the alert drill's own stack at +300) stays below 32768, where Linux
                                  starts handing out ephemeral ports: a client socket of the same machine
                                  cannot take one of ours in the middle of a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clawdbot_otel.stack import (
    Binaries,
    Ports,
    StackError,
    StackInfo,
    build_all,
    collector_env,
    down,
    repo_root,
    up,
)

TEST_PORT_OFFSET = int(os.environ.get("CLAWDBOT_OTEL_TEST_PORT_OFFSET", "15000"))
# Short tail-sampling wait for the tests (production default: 10s).
DECISION_WAIT_S = 2.0
SAMPLING_PERCENTAGE = 10.0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def http_json(
    url: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """GET a JSON API; (status, parsed body or None). Connection errors propagate."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode(errors="replace")


def wait_for(predicate: Any, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll `predicate()` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def prom_query(stack: RunningStack, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query's result vector (at `at`, epoch s, or now)."""
    params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
    status, body = http_json(f"{stack.prometheus}/api/v1/query", params)
    assert status == 200, body
    return list(body["data"]["result"])


def logsql(base_url: str, query: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Rows of a LogsQL query against a VictoriaLogs instance (the query node or one storage instance)."""
    data = urllib.parse.urlencode({"query": query, "limit": str(limit)}).encode()
    req = urllib.request.Request(f"{base_url}/select/logsql/query", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
    except urllib.error.HTTPError as exc:
        pytest.fail(f"VictoriaLogs refused {query!r}: {exc.code} {exc.read().decode(errors='replace')[:300]}")
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def metric_sum(url: str, prefix: str) -> float:
    """The sum of the samples on a server's /metrics page whose line starts with `prefix` (0 when absent)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def jaeger_spans(stack: RunningStack, service: str) -> list[dict[str, Any]]:
    """Every span of `service`'s traces of the last hour, with a `tags_map` added."""
    status, body = http_json(f"{stack.jaeger}/api/traces", {"service": service, "limit": 2000, "lookback": "1h"},
                             timeout=30)
    assert status == 200, body
    spans = []
    for trace in body["data"] or []:
        for span in trace["spans"]:
            span["tags_map"] = {t["key"]: t["value"] for t in span["tags"]}
            spans.append(span)
    return spans


def parent_of(spans: list[dict[str, Any]]) -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
    """A span's parent among `spans` (Jaeger's CHILD_OF reference), or None."""
    by_id = {(s["traceID"], s["spanID"]): s for s in spans}

    def parent(span: dict[str, Any] | None) -> dict[str, Any] | None:
        for ref in (span or {}).get("references") or []:
            if ref["refType"] == "CHILD_OF":
                return by_id.get((ref["traceID"], ref["spanID"]))
        return None

    return parent


@dataclasses.dataclass(frozen=True)
class GatewayProcess:
    url: str
    port: int
    env: dict[str, str]
    """The environment it runs with: the same OTEL_* variables serve a `clawdbot-otel demo` beside it."""
    log_path: Path


@contextlib.contextmanager
def gateway_process(otlp_grpc: str, service: str, args: list[str], tmp: Path,
                    extra_env: dict[str, str] | None = None) -> Iterator[GatewayProcess]:
    """`clawdbot-otel gateway ARGS` as a user runs it: OTEL_* variables pointing at a collector, production
    settings, fast export intervals; stopped with SIGINT (a clean shutdown flushes its telemetry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_grpc,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": service,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=production",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "CLAWDBOT_OTEL_OUTPUT_DIR": str(tmp / "unused"),
        **(extra_env or {}),
    })
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "clawdbot_otel.cli", "gateway", "--port", str(port), *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the gateway exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            return b"listening on" in log_path.read_bytes()

        wait_for(listening, 60, 0.2, "the gateway to listen")
        yield GatewayProcess(f"ws://127.0.0.1:{port}", port, env, log_path)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclasses.dataclass(frozen=True)
class RunningStack:
    info: StackInfo
    binaries: Binaries
    decision_wait_s: float
    sampling_percentage: float

    @property
    def ports(self) -> Ports:
        return self.info.ports

    @property
    def otlp_grpc(self) -> str:
        return self.info.otlp_grpc_endpoint

    @property
    def jaeger(self) -> str:
        return self.info.jaeger_url

    @property
    def prometheus(self) -> str:
        return self.info.prometheus_url

    @property
    def victorialogs(self) -> str:
        return self.info.victorialogs_url


@contextlib.contextmanager
def _running_stack(root: Path, offset: int, samplers: int = 0) -> Iterator[RunningStack]:
    try:
        binaries = build_all(progress=_progress)
        info = up(
            root=root,
            ports=Ports().shifted(offset),
            binaries=binaries,
            collector_extra_env={
                "CLAWDBOT_OTEL_SAMPLING_PERCENTAGE": str(SAMPLING_PERCENTAGE),
                "CLAWDBOT_OTEL_DECISION_WAIT": f"{DECISION_WAIT_S}s",
            },
            samplers=samplers,
            timeout=180,
            progress=_progress,
        )
    except StackError as exc:
        pytest.fail(f"the observability stack could not be started: {exc}", pytrace=False)
    try:
        yield RunningStack(info, binaries, DECISION_WAIT_S, SAMPLING_PERCENTAGE)
    finally:
        down(root, progress=_progress)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with _running_stack(tmp_path_factory.mktemp("stack"), TEST_PORT_OFFSET) as running:
        yield running


TWO_TIER_SAMPLERS = 3


@pytest.fixture(scope="session")
def two_tier_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A second whole stack (`stack up --samplers 3`: the collector on the OTLP ports load-balancing traces by
    trace id over three tail-sampling collectors), 150 ports above the first one (no two ports of a stack,
    its samplers or the tests' extra collectors are 150 apart)."""
    with _running_stack(tmp_path_factory.mktemp("stack2tier"), TEST_PORT_OFFSET + 150, TWO_TIER_SAMPLERS) as running:
        yield running


@contextlib.contextmanager
def server_process(what: str, argv: list[str], log: Path, ready_url: str, *, env: dict[str, str] | None = None,
                   timeout: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """A server the test starts itself (beside the stack), ready when `ready_url` answers 200; the test fails
    with its log if it exits first. Stopped with SIGTERM (SIGKILL after 15 s)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:  # refused while starting; HTTPError (not ready yet) is an OSError too
                return False

        wait_for(ready, timeout, 0.2, f"{what} to become ready ({ready_url})")
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclasses.dataclass(frozen=True)
class ExtraCollector:
    otlp_grpc: str
    sampling_percentage: float


@pytest.fixture(scope="session")
def collector_keep_all(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtraCollector]:
    """A second collector (same config file, sampling percentage 100) on its own ports, in front of the
    same Jaeger/Prometheus/VictoriaLogs."""
    shift = stack.ports.shifted(100)
    log = tmp_path_factory.mktemp("collector100") / "otel-collector.log"
    env = {
        **os.environ,
        **collector_env(
            stack.ports,
            otlp_grpc=shift.otlp_grpc,
            otlp_http=shift.otlp_http,
            health=shift.collector_health,
            metrics=shift.collector_metrics,
        ),
        "CLAWDBOT_OTEL_SAMPLING_PERCENTAGE": "100",
        "CLAWDBOT_OTEL_DECISION_WAIT": f"{DECISION_WAIT_S}s",
        "OTELCOL_STORAGE_DIR": str(log.parent / "queue"),
    }
    configs = [repo_root() / "otel-collector" / name for name in ("config.yaml", "logs-victorialogs.yaml")]
    argv = [str(stack.binaries.collector), *(arg for c in configs for arg in ("--config", str(c)))]
    with server_process("the 100% collector", argv, log, f"http://127.0.0.1:{shift.collector_health}/", env=env):
        yield ExtraCollector(f"http://127.0.0.1:{shift.otlp_grpc}", 100.0)


DEMO_SECONDS = 25


@dataclasses.dataclass(frozen=True)
class DemoRun:
    service: str
    gateway_log: str
    demo_output: str
    ended_at: float


@pytest.fixture(scope="session")
def demo_run(stack: RunningStack, collector_keep_all: ExtraCollector, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[DemoRun]:
    """The user's workflow once per session: `clawdbot-otel gateway` (exporting to the 100% collector) and
    `clawdbot-otel demo` against it; the end-to-end and browser tests read what it left in the stores."""
    tmp = tmp_path_factory.mktemp("e2e-gateway")
    service = f"clawdbot-e2e-{uuid.uuid4().hex[:8]}"
    args = ["--workspace", str(tmp / "clawd"), "--token", "e2e", "--time-scale", "0.05", "--heartbeat-stale-after", "2"]
    with gateway_process(collector_keep_all.otlp_grpc, service, args, tmp) as gateway:
        demo = subprocess.run(
            [sys.executable, "-m", "clawdbot_otel.cli", "demo", "--duration", str(DEMO_SECONDS), "--gateway",
             gateway.url, "--token", "e2e", "--seed", "7"],
            env=gateway.env, capture_output=True, text=True, timeout=DEMO_SECONDS + 120, check=False)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        ended_at = time.time()
        time.sleep(3)  # let watchers, gauges and the last export interval see the demo's end
    yield DemoRun(service, gateway.log_path.read_text(), demo.stdout + demo.stderr, ended_at)


@pytest.fixture(scope="session")
def repo() -> Path:
    return repo_root()

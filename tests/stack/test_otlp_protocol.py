"""The endpoint `stack up` prints works as printed, and a protocol mismatch is explained once.

A real collector (the stack's own build) listens on both OTLP ports and prints what it receives; an
application process is configured exactly as the printed line says (or deliberately wrong) and exports
one span.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawdbot_otel.stack import COLLECTOR_VERSION, Ports, StackInfo, cache_dir, otlp_export_line

from .conftest import TEST_PORT_OFFSET, wait_for

pytestmark = pytest.mark.stack

SPAN = "export-line-check"
APP = (
    "import clawdbot_otel\n"
    "from opentelemetry import trace\n"
    "clawdbot_otel.setup(service_name='export-line-check')\n"
    f"trace.get_tracer('t').start_span({SPAN!r}).end()\n"
    "clawdbot_otel.shutdown()\n"
)
GRPC_HINT = "speaks gRPC, but the exporters send http/protobuf"
HTTP_HINT = "speaks OTLP/HTTP, but the exporters send grpc"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackInfo, Path]]:
    binary = cache_dir() / "bin" / f"otelcol-clawdbot-v{COLLECTOR_VERSION}"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"collector not built ({binary}): run `clawdbot-otel stack build`")
    ports = Ports().shifted(TEST_PORT_OFFSET + 300)
    tmp = tmp_path_factory.mktemp("otlp-protocol")
    config = tmp / "config.yaml"
    config.write_text(
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc: {{endpoint: '127.0.0.1:{ports.otlp_grpc}'}}\n"
        f"      http: {{endpoint: '127.0.0.1:{ports.otlp_http}'}}\n"
        "exporters:\n  debug: {verbosity: detailed}\n"
        "service:\n  telemetry: {metrics: {level: none}}\n  pipelines:\n"
        "    traces: {receivers: [otlp], exporters: [debug]}\n"
        "    metrics: {receivers: [otlp], exporters: [debug]}\n"
        "    logs: {receivers: [otlp], exporters: [debug]}\n"
    )
    log = tmp / "collector.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)

    def listening() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"collector exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", ports.otlp_http), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        wait_for(listening, 60, 0.2, "the collector's OTLP ports")
        yield StackInfo(stack_dir=tmp, ports=ports, pids={"otel-collector": proc.pid}), log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_app(env_vars: dict[str, str], tmp: Path) -> str:
    """The application under `env_vars` (no other OTEL_* setting); its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    env.update(env_vars, OTEL_EXPORTER_OTLP_TIMEOUT="2", XDG_STATE_HOME=str(tmp))
    done = subprocess.run([sys.executable, "-c", APP], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _exported_variables(line: str) -> dict[str, str]:
    words = shlex.split(line)
    assert words[0] == "export", line
    return dict(word.split("=", 1) for word in words[1:])


@pytest.mark.parametrize("protocol_in_env", [None, "grpc"])
def test_the_printed_export_line_delivers_spans(collector: tuple[StackInfo, Path], tmp_path: Path,
                                               protocol_in_env: str | None) -> None:
    stack, log = collector
    user_env = {} if protocol_in_env is None else {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol_in_env}
    line = otlp_export_line(stack, user_env)
    port = stack.ports.otlp_grpc if protocol_in_env == "grpc" else stack.ports.otlp_http
    protocol = protocol_in_env or "http/protobuf"
    assert line == (f"export OTEL_EXPORTER_OTLP_PROTOCOL={protocol} "
                    f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port}")
    before = log.read_text().count(SPAN)
    stderr = _run_app({**user_env, **_exported_variables(line)}, tmp_path)
    wait_for(lambda: log.read_text().count(SPAN) > before, 15, 0.2, f"span {SPAN} at the collector")
    assert GRPC_HINT not in stderr and HTTP_HINT not in stderr


def test_the_demo_says_where_its_telemetry_went(collector: tuple[StackInfo, Path], tmp_path: Path) -> None:
    """`demo --embedded` under the printed export line: a summary that names the endpoint, and the
    collector has its spans."""
    stack, log = collector
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    env.update(_exported_variables(otlp_export_line(stack, {})), XDG_STATE_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", "demo", "--embedded", "--duration", "3",
                           "--seed", "1"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.replace("\r", "\n").splitlines()
    assert lines[-3:] == [
        f"  sent over OTLP (http/protobuf) to {stack.otlp_http_endpoint}",
        f"  log lines in {tmp_path / 'clawdbot-otel' / 'logs'} (--verbose shows them here)",
        "look at them: clawdbot-otel stack status  (the Jaeger, Prometheus and log store URLs; service "
        "clawdbot-gateway)",
    ]
    wait_for(lambda: "invoke_agent" in log.read_text(), 15, 0.2, "the demo's session spans at the collector")


def test_http_protobuf_at_the_grpc_port_is_explained_once(collector: tuple[StackInfo, Path], tmp_path: Path) -> None:
    stack, _ = collector
    stderr = _run_app({"OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_grpc_endpoint}, tmp_path)
    assert stderr.count(GRPC_HINT) == 1, stderr
    assert ("Fix one of the two: point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's http/protobuf port "
            "(http://127.0.0.1:4318 for `clawdbot-otel stack up`), or keep the endpoint and set "
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc.") in stderr


def test_grpc_at_the_http_port_is_explained_once(collector: tuple[StackInfo, Path], tmp_path: Path) -> None:
    stack, _ = collector
    stderr = _run_app({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_http_endpoint},
                      tmp_path)
    assert stderr.count(HTTP_HINT) == 1, stderr
    assert "or keep the endpoint and set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf." in stderr

"""Bad CLI input gets one line that says what is wrong and what to do (item 3 of issue 16), tested literally."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "clawdbot_otel.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_", "OPENCLAW_"))}
    return {**env, "CLAWDBOT_OTEL_OUTPUT_DIR": str(tmp_path / "telemetry"), **extra}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("upstream", "line"), [
    ("http://nope", "clawdbot-otel gateway: --upstream http://nope is not a WebSocket URL: use ws://HOST:PORT or "
                    "wss://HOST:PORT, the address the OpenClaw gateway listens on (e.g. ws://127.0.0.1:18790)\n"),
    ("ws://", "clawdbot-otel gateway: --upstream ws:// has no usable host or port: use ws://HOST:PORT "
              "(e.g. ws://127.0.0.1:18790)\n"),
    ("ws://ops:FAKEpassw0rd@gw:99999", "clawdbot-otel gateway: --upstream ws://ops:[REDACTED:url-credentials]@gw:99999 "
                                       "has no usable host or port: use ws://HOST:PORT (e.g. ws://127.0.0.1:18790)\n"),
])
def test_an_upstream_that_is_not_a_websocket_address_is_refused_in_one_line(
        tmp_path: Path, upstream: str, line: str) -> None:
    done = subprocess.run([*CLI, "gateway", "--upstream", upstream], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line)


def test_an_upstream_that_does_not_answer_at_start_is_said_once_and_the_proxy_keeps_running(tmp_path: Path) -> None:
    port = _closed_port()
    token = "FAKE-upstream-token-0042"
    proc = subprocess.Popen(
        [*CLI, "gateway", "--port", "0", "--upstream", f"ws://127.0.0.1:{port}", "--upstream-token", token,
         "--workspace", str(tmp_path / "clawd")],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("does not answer" in ln for ln in lines):
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                lines.append(proc.stderr.readline())
        assert proc.poll() is None  # still running: it reports the dead upstream and relays once it is back
        (said,) = [ln for ln in lines if "does not answer" in ln]
        assert said == (f"clawdbot-otel gateway: upstream ws://127.0.0.1:{port} does not answer (connection "
                        "refused); clients are refused until it does: start the OpenClaw gateway there or fix "
                        "--upstream\n")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    written = "".join(p.read_text() for p in (tmp_path / "telemetry").glob("*.jsonl"))
    assert token not in out + err + "".join(lines) + written  # the probe's token: in no log, span or metric


def test_an_otlp_endpoint_that_is_not_a_url_is_said_and_config_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "config"], env=_env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="not-a-url"),
                          capture_output=True, text=True, timeout=30, check=False)
    message = ("OTEL_EXPORTER_OTLP_ENDPOINT='not-a-url' is not a URL: set it to the collector's address, e.g. "
               "http://127.0.0.1:4318 (4317 with grpc); writing telemetry to local files meanwhile")
    assert (done.returncode, done.stderr) == (2, f"clawdbot-otel: {message}\n")
    assert f'"problems": [\n    "{message}"\n  ]' in done.stdout
    assert f'"traces": "file:{tmp_path / "telemetry" / "traces.jsonl"}"' in done.stdout


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4318", "https://collector.example"])
def test_a_good_endpoint_is_used_without_a_word(tmp_path: Path, endpoint: str) -> None:
    done = subprocess.run([*CLI, "config"], env=_env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint),
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert '"traces": "otlp/http"' in done.stdout and '"problems": []' in done.stdout


def test_grpc_takes_host_and_port_without_a_scheme(tmp_path: Path) -> None:
    env = _env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="collector:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    done = subprocess.run([*CLI, "config"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert '"traces": "otlp/grpc"' in done.stdout

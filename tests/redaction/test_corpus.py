"""The secrets corpus through every surface, searched for in every output: zero leaks, kinds kept.

- public API (`drive_api`): OTLP-JSON files (traces, metrics, logs), per-level log files, the audit folder,
  the console (JSON lines on stderr), and the SDK's console exporters for all three signals;
- the embedded gateway and the proxy in front of it, as `clawdbot-otel gateway` processes: agent turns
  whose messages carry the samples, a request and a non-JSON frame full of them, a handshake with a
  secret in its headers, a client presenting a secret as its token, and the gateway token itself (the
  proxy's liveness probe uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from clawdbot_otel.simulation import GatewayClient, GatewayError

from .corpus import CORPUS

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_TOKEN = "gw-token-" + "FAKE" + "7f3c9e2a51"  # no format: hidden because the gateway knows it


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_", "OPENCLAW_"))}
    return {**env, "PYTHONPATH": str(ROOT), "CLAWDBOT_OTEL_OUTPUT_DIR": str(tmp / "telemetry"),
            "CLAWDBOT_OTEL_LOG_DIR": str(tmp / "logs"), "CLAWDBOT_OTEL_CAPTURE_CONTENT": "1",
            "OTEL_METRIC_EXPORT_INTERVAL": "500", **extra}


def _read(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode(errors="replace")


def _outputs(tmp: Path, console: str) -> dict[str, str]:
    """Each surface's text: OTLP files by signal, log files by folder (audit apart), the console."""
    out = {"console": console}
    for signal_name in ("traces", "metrics", "logs"):
        path = tmp / "telemetry" / f"{signal_name}.jsonl"
        out[f"otlp {signal_name}"] = path.read_text() if path.exists() else ""
    files = sorted(p for p in (tmp / "logs").rglob("*") if p.is_file())
    out["log files"] = "".join(_read(p) for p in files if "audit" not in p.parts)
    out["audit"] = "".join(_read(p) for p in files if "audit" in p.parts)
    return out


def _leaks(outputs: dict[str, str], secrets: list[str]) -> list[tuple[str, str]]:
    return [(surface, secret) for surface, text in outputs.items() for secret in secrets if secret in text]


def _kinds(text: str) -> set[str]:
    return set(re.findall(r"\[REDACTED:([a-z0-9-]+)\]", text))


def _print_matrix(title: str, outputs: dict[str, str]) -> None:
    surfaces = [s for s, text in outputs.items() if text]
    sys.stdout.write(f"\n{title}: kind x surface (+ = label present, every payload absent everywhere)\n")
    sys.stdout.write(f"{'kind':<20}" + "".join(f"{s:>13}" for s in surfaces) + "\n")
    found = {s: _kinds(outputs[s]) for s in surfaces}
    for kind in sorted({s.kind for s in CORPUS} | {k for f in found.values() for k in f}):
        sys.stdout.write(f"{kind:<20}" + "".join(f"{'+' if kind in found[s] else '.':>13}" for s in surfaces) + "\n")


def test_the_public_api_leaks_no_sample_on_any_surface(tmp_path: Path) -> None:
    files = subprocess.run([sys.executable, "-m", "tests.redaction.drive_api"], env=_env(tmp_path), cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=False)
    assert files.returncode == 0, files.stderr[-2000:]
    console_env = _env(tmp_path / "console", OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console",
                       OTEL_LOGS_EXPORTER="console")
    console = subprocess.run([sys.executable, "-m", "tests.redaction.drive_api"], env=console_env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=False)
    assert console.returncode == 0, console.stderr[-2000:]
    outputs = _outputs(tmp_path, files.stdout + files.stderr)
    outputs["sdk console"] = console.stdout + console.stderr
    _print_matrix("public API", outputs)
    assert _leaks(outputs, [s.payload for s in CORPUS]) == []
    kinds = {s.kind for s in CORPUS}
    for surface in ("console", "otlp traces", "otlp metrics", "otlp logs", "log files", "audit", "sdk console"):
        assert kinds <= _kinds(outputs[surface]), (surface, kinds - _kinds(outputs[surface]))


class _Gateway:
    """`clawdbot-otel gateway` as a process; its URL from the line it prints."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clawdbot_otel.cli", "gateway", "--port", "0", "--workspace", str(tmp / "clawd"),
             *args], env=_env(tmp), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (ws://\S+)", line)
        assert match, line + (self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else "")
        self.url = match.group(1)
        self.first_line = line

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err[-2000:]
        return self.first_line + out + err


async def _drive(url: str) -> None:
    async with GatewayClient(url, token=GATEWAY_TOKEN) as client:
        for i, sample in enumerate(CORPUS):
            with contextlib.suppress(GatewayError):
                await client.agent(f"{sample.text}\nrun a tool", session_key=f"agent:main:{sample.text}" if i % 3 == 0
                                   else None, timeout_s=30)
        with contextlib.suppress(GatewayError):  # the token in free text: found only because it is known
            await client.agent(f"the gateway token is {GATEWAY_TOKEN}", timeout_s=30)
        with contextlib.suppress(GatewayError):
            await client.call("no.such.method", {s.kind: s.text for s in CORPUS}, timeout_s=10)
        await client.send_raw("not json: " + " | ".join(s.text for s in CORPUS))
        await asyncio.sleep(0.2)
    bearer = next(s for s in CORPUS if s.kind == "bearer-token")
    async with connect(url, additional_headers={"Authorization": f"Bearer {bearer.payload}",
                                                "Cookie": f"session={bearer.payload}"}) as ws:
        await ws.recv()
    intruder = GatewayClient(url, token=next(s for s in CORPUS if s.kind == "github-token").text)
    with contextlib.suppress(GatewayError, ConnectionError):
        await intruder.connect()
    await intruder.close()


def test_the_embedded_gateway_and_the_proxy_leak_no_sample_and_never_their_token(tmp_path: Path) -> None:
    upstream = _Gateway(tmp_path / "embedded", "--token", GATEWAY_TOKEN, "--time-scale", "0.02")
    try:
        proxy = _Gateway(tmp_path / "proxy", "--upstream", upstream.url, "--upstream-token", GATEWAY_TOKEN)
        try:
            asyncio.run(_drive(proxy.url))
            asyncio.run(asyncio.sleep(1.0))  # the observer's queue and the upstream's last frames
        finally:
            proxy_console = proxy.stop()
    finally:
        upstream_console = upstream.stop()
    embedded, proxied = _outputs(tmp_path / "embedded", upstream_console), _outputs(tmp_path / "proxy", proxy_console)
    _print_matrix("embedded gateway", embedded)
    _print_matrix("proxy in front of it", proxied)
    outputs = {f"embedded {k}": v for k, v in embedded.items()} | {f"proxy {k}": v for k, v in proxied.items()}
    assert _leaks(outputs, [s.payload for s in CORPUS] + [GATEWAY_TOKEN]) == []
    proxy_traces = outputs["proxy otlp traces"] + outputs["embedded otlp traces"]
    for kind in ("anthropic-key", "github-token", "private-key", "jwt", "bearer-token"):
        assert kind in _kinds(proxy_traces), kind
    assert "gateway-token" in _kinds(outputs["proxy otlp traces"] + outputs["proxy otlp logs"])

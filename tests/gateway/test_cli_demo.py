"""The `gateway` and `demo` subcommands, and a short demo run that reaches every collection point."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clawdbot_otel.frames import ERROR_UNAVAILABLE, error_response
from clawdbot_otel.gateway import GatewayServer, register
from clawdbot_otel.simulation import EmbeddedRuntime, Peer, run_demo
from clawdbot_otel.testing import capture_telemetry

pytestmark = pytest.mark.timeout(90)


def test_register_adds_subcommands() -> None:
    parser = argparse.ArgumentParser(prog="clawdbot-otel")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gateway", "--port", "18800", "--upstream", "ws://127.0.0.1:18790"])
    assert (args.command, args.host, args.port, args.upstream) == ("gateway", "127.0.0.1", 18800,
                                                                   "ws://127.0.0.1:18790")
    args = parser.parse_args(["demo", "--duration", "5", "--gateway", "ws://127.0.0.1:1", "--token", "T"])
    assert (args.duration, args.gateway, args.token) == (5.0, "ws://127.0.0.1:1", "T")
    assert callable(args.func)


async def test_demo_reaches_every_collection_point(tmp_path: Path) -> None:
    with capture_telemetry(strict=True, log_level="INFO") as cap:
        server = GatewayServer(cap.telemetry, port=0, workspace=tmp_path / "clawd", token="T", time_scale=0.02,
                               tick_interval_s=0.5, seed=5)
        async with server:
            await server.runtime.cron.run(next(iter(server.runtime.cron.jobs)))  # type: ignore[union-attr]
            out = io.StringIO()
            stats = await run_demo(server.url, token="T", duration_s=3.0, concurrency=3, seed=11, out=out)
            names = set(cap.collect_metrics())  # while the watchers and the sampler still report
        assert server.observer_errors == []
    assert stats.ok > 20
    assert stats.unexpected_failures == 0, stats.summary()
    assert stats.expected_failures > 0 and stats.exit_status == 0  # the provoked ones (bad frame, model error)
    assert "ops" in out.getvalue() and "unexpected 0" in out.getvalue()
    for name in ("gateway.requests", "gateway.request.latency", "gateway.errors", "gateway.active_connections",
                 "gateway.throughput.requests", "gateway.uptime", "session", "session.duration",
                 "session.tokens_used", "session.cost_usd", "session.tool_calls", "session.errors",
                 "scheduler.jobs", "spawn.requests", "spawn.subagent", "spawn.queue.latency",
                 "inbox.messages", "heartbeat.active", "task.completion", "task.validation.passes",
                 "resource.memory.used"):
        assert name in names, name
    categories = {str(s.attributes.get("clawdbot.span.category")) for s in cap.finished_spans()}
    assert {"request", "session", "model_call", "tool_call", "spawn", "message", "validation", "job"} <= categories


async def test_demo_fails_on_errors_it_did_not_provoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_health(runtime: EmbeddedRuntime, peer: Peer, frame_id: str, params: dict[str, object]) -> None:
        peer.send_frame(error_response(frame_id, ERROR_UNAVAILABLE, "health check broke"))

    monkeypatch.setitem(EmbeddedRuntime._handlers, "health", broken_health)
    with capture_telemetry() as cap:
        server = GatewayServer(cap.telemetry, port=0, workspace=tmp_path / "clawd", time_scale=0.01, cron_jobs=(),
                               seed=5, collectors=False)
        async with server:
            out = io.StringIO()
            stats = await run_demo(server.url, duration_s=2.0, concurrency=4, seed=11, out=out)
    assert stats.ops["health"] >= 1  # every scenario runs once first
    assert stats.unexpected_failures == stats.ops["health"] and stats.exit_status == 1
    assert list(stats.unexpected) == ["health: GatewayError: UNAVAILABLE: health check broke"]
    assert stats.expected_failures >= 1  # the bad frame is still an expected failure
    summary = out.getvalue().splitlines()
    assert f"unexpected {stats.unexpected_failures}" in summary[-3]
    assert summary[-2:] == [f"unexpected failures ({stats.unexpected_failures}):",
                            f"  {stats.unexpected_failures:5d}  health: GatewayError: UNAVAILABLE: health check broke"]


def _run_embedded_demo(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    env["CLAWDBOT_OTEL_OUTPUT_DIR"] = str(tmp_path / "out")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    proc = subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", "demo", "--embedded", "--duration", "4",
                           "--seed", "3", *extra], env=env, capture_output=True, text=True, timeout=80, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _otlp_json(path: Path, *keys: str) -> list[dict[str, Any]]:
    """The innermost items (spans, log records) of every batch in an OTLP-JSON file."""
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        level: list[Any] = [json.loads(line)]
        for key in keys:
            level = [item for parent in level for item in parent[key]]
        out += level
    return out


def test_demo_embedded_is_the_whole_job_in_one_command(tmp_path: Path) -> None:
    """The README's first command: no gateway, no collector, telemetry lands in local files, and the
    terminal shows progress and a summary of what was produced, not the gateway's log lines."""
    proc = _run_embedded_demo(tmp_path)
    spans = _otlp_json(tmp_path / "out" / "traces.jsonl", "resourceSpans", "scopeSpans", "spans")
    categories = {a["value"]["stringValue"] for s in spans for a in s["attributes"]
                  if a["key"] == "clawdbot.span.category"}
    assert {"request", "session", "tool_call"} <= categories
    records = _otlp_json(tmp_path / "out" / "logs.jsonl", "resourceLogs", "scopeLogs", "logRecords")
    lines = proc.stderr.replace("\r", "\n").splitlines()
    assert not [line for line in lines if line.startswith("{")], "JSON log lines on the terminal"
    assert lines[0].startswith("clawdbot-otel demo: embedded gateway on ws://127.0.0.1:")
    assert all(line.startswith("demo ") for line in lines[1:-4]), lines
    traces = len({s["traceId"] for s in spans})
    produced = lines[-4].split(", ")
    assert produced[:2] == [f"produced: {traces} traces", f"{len(spans)} spans"]
    assert produced[2].endswith(" metric series") and int(produced[2].split()[0]) > 10
    assert produced[3] == f"{len(records)} log records"
    assert lines[-3:] == [
        f"  written as OTLP-JSON files to {tmp_path / 'out'} (no OTEL_EXPORTER_OTLP_ENDPOINT set)",
        f"  log lines in {tmp_path / 'state' / 'clawdbot-otel' / 'logs'} (--verbose shows them here)",
        "look at them: clawdbot-otel stack up  (then run the demo again with the export line it prints)",
    ]
    assert list((tmp_path / "state" / "clawdbot-otel" / "logs").rglob("*.log")), "no log file written"


def test_demo_embedded_verbose_shows_the_log_lines(tmp_path: Path) -> None:
    proc = _run_embedded_demo(tmp_path, "--verbose")
    json_lines = [line for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(json_lines) > 20
    assert all(json.loads(line)["level"] for line in json_lines)

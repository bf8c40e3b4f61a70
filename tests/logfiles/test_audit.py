"""The audit channel: same record shape, its own folder, never filtered by the minimum level; stack start/stop."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from clawdbot_otel import StreamSink, audit
from clawdbot_otel.logfiles import LevelFileSink
from clawdbot_otel.stack import Binaries, Ports, StackError, _launch
from clawdbot_otel.testing import capture_telemetry

from .conftest import FakeClock, read_lines


def test_audit_records_reach_the_audit_folder_whatever_the_min_level(tmp_path: Path, clock: FakeClock) -> None:
    sink = LevelFileSink(tmp_path, clock=clock)
    with capture_telemetry(log_level="FATAL") as cap:
        t = cap.telemetry
        t.bind(t.meter_provider, t.tracer_provider, t.logger_provider, log_sinks=[sink])
        t.log("ERROR", "gateway", "filtered out")  # below FATAL
        audit("auth", telemetry=t, outcome="success", actor="client-7", remote_addr="127.0.0.1",
              request_id="req-9")
        audit("auth", telemetry=t, outcome="failure", actor="client-8", reason="bad_token", token="s3cr3t")
        otlp = cap.otlp_logs()
    sink.close()
    assert not (tmp_path / "error").exists()
    success, failure = (orjson.loads(x) for x in read_lines(tmp_path / "audit"))
    assert success["level"] == "INFO"
    assert success["component"] == "audit"
    assert success["message"] == "auth"
    assert success["request_id"] == "req-9"
    assert success["metadata"] == {"action": "auth", "outcome": "success", "actor": "client-7",
                                   "remote_addr": "127.0.0.1"}
    assert failure["level"] == "WARN"
    assert failure["metadata"]["reason"] == "bad_token"
    assert failure["metadata"]["token"] != "s3cr3t"  # redacted like any record
    # ... and exported over OTLP like any record: the log store keeps it in its audit instance
    assert [(r.log_record.severity_text, (r.log_record.attributes or {}).get("component")) for r in otlp] \
        == [("INFO", "audit"), ("WARN", "audit")]


def test_audit_goes_through_the_instances_current_sinks(tmp_path: Path, clock: FakeClock) -> None:
    with capture_telemetry() as cap:
        audit("stack.start", telemetry=cap.telemetry, actor="clawdbot-otel", message="Stack started")
        assert [r["message"] for r in cap.log_lines()] == ["Stack started"]
        sink = LevelFileSink(tmp_path, clock=clock)
        t = cap.telemetry
        t.bind(t.meter_provider, t.tracer_provider, t.logger_provider, log_sinks=[sink])
        audit("config.change", telemetry=t, actor="cli", key="gateway.port", old=18789, new=18790)
    sink.close()
    [record] = [orjson.loads(x) for x in read_lines(tmp_path / "audit")]
    assert record["metadata"] == {"action": "config.change", "outcome": "success", "actor": "cli",
                                  "key": "gateway.port", "old": 18789, "new": 18790}


def test_audit_never_raises_outside_strict_mode() -> None:
    with capture_telemetry(strict=False) as cap:
        audit("auth", telemetry=cap.telemetry, level="LOUD")
        assert cap.telemetry.dropped[("log_error", "audit")] == 1
    with capture_telemetry(strict=True) as cap, pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        audit("auth", telemetry=cap.telemetry, level="LOUD")


def test_audit_defaults_to_the_module_level_instance() -> None:
    import clawdbot_otel

    out = io.BytesIO()
    clawdbot_otel.get_telemetry().bind(log_sinks=[StreamSink(out)])
    try:
        audit("stack.stop")
    finally:
        clawdbot_otel.get_telemetry().bind(log_sinks=[StreamSink()])
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["component"], r["message"]) for r in records] == [("audit", "stack.stop")]


# --- stack start and stop --------------------------------------------------------------------------
@pytest.fixture
def audited(tmp_path: Path, clock: FakeClock) -> Iterator[Path]:
    """The default instance (what the launcher's `audit` calls use) writes to files under tmp_path/logs,
    as `clawdbot-otel stack up|down` binds it."""
    import clawdbot_otel

    sink = LevelFileSink(tmp_path / "logs", clock=clock)
    clawdbot_otel.get_telemetry().bind(log_sinks=[sink])
    try:
        yield tmp_path / "logs" / "audit"
    finally:
        clawdbot_otel.get_telemetry().bind(log_sinks=[StreamSink()])
        sink.close()


def test_stack_up_and_down_are_audited(tmp_path: Path, audited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in servers: a sleeping interpreter for each binary, "ready" at once, ports never bound.
    python = Path(sys.executable)
    binaries = Binaries(python, python, python, python, python)

    def start(server: Any, logs: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([server.argv[0], "-c", "import time; time.sleep(60)"])
        deadline = time.monotonic() + 10
        while not _launch._is_ours(proc.pid, server.argv[0]) and time.monotonic() < deadline:
            time.sleep(0.01)  # until it has exec'd: down() stops only processes that run our binary
        return proc

    monkeypatch.setattr(_launch, "_start", start)
    monkeypatch.setattr(_launch, "_http_ok", lambda url, timeout=2.0: (True, "HTTP 200"))
    monkeypatch.setattr(_launch, "check_ports_free", lambda servers_ports: None)
    ports = Ports().shifted(1_000)
    stack = _launch.up(root=tmp_path / "stack", ports=ports, binaries=binaries, progress=lambda _line: None)
    stopped = _launch.down(tmp_path / "stack", progress=lambda _line: None)
    assert stopped == sorted(stack.pids)

    start_record, stop_record = (orjson.loads(x) for x in read_lines(audited))
    assert (start_record["message"], start_record["level"]) == ("stack.start", "INFO")
    assert start_record["metadata"]["outcome"] == "success"
    assert start_record["metadata"]["actor"]  # the OS user
    assert start_record["metadata"]["servers"] == stack.pids
    assert start_record["metadata"]["ports"]["otlp_grpc"] == 5_317
    assert start_record["metadata"]["already_running"] is False
    assert stop_record["message"] == "stack.stop"
    assert stop_record["metadata"]["servers"] == stack.pids
    assert stop_record["metadata"]["stopped"] == stopped
    assert stop_record["metadata"]["ports"] == start_record["metadata"]["ports"]


def test_a_failed_stack_up_is_audited(tmp_path: Path, audited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def taken(servers_ports: Any) -> None:
        raise StackError("port 4317 (otel-collector, `otlp_grpc`) is already in use on 127.0.0.1.\nmore detail")

    monkeypatch.setattr(_launch, "check_ports_free", taken)
    python = Path(sys.executable)
    with pytest.raises(StackError, match="already in use"):
        _launch.up(root=tmp_path / "stack", ports=Ports(), binaries=Binaries(python, python, python, python, python),
                   progress=lambda _line: None)
    [record] = [orjson.loads(x) for x in read_lines(audited)]
    assert (record["message"], record["level"]) == ("stack.start", "WARN")
    assert record["metadata"]["outcome"] == "failure"
    assert record["metadata"]["error"] == "StackError"
    assert record["metadata"]["reason"] == "port 4317 (otel-collector, `otlp_grpc`) is already in use on 127.0.0.1."
    assert record["metadata"]["servers"] == {}
    assert record["metadata"]["ports"]["otlp_grpc"] == 4_317

"""The audit channel: same record shape, its own folder, never filtered by the minimum level."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from clawdbot_otel.logfiles import LevelFileSink, audit
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
    # ... and exported over OTLP like any record: Loki keeps it by the {component="audit"} rule
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


def test_audit_defaults_to_the_module_level_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    import clawdbot_otel

    with capture_telemetry() as cap:
        monkeypatch.setattr(clawdbot_otel, "get_telemetry", lambda: cap.telemetry)
        audit("stack.stop")
        assert [(r["component"], r["message"]) for r in cap.log_lines()] == [("audit", "stack.stop")]

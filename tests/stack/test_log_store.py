"""The log store on the real VictoriaLogs: each record in its retention class, each class's age limit
enforced by the server itself, and `clawdbot-otel logs search` over the query node."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from clawdbot_otel import Telemetry, audit
from clawdbot_otel.conventions import LOG_LEVELS
from clawdbot_otel.logfiles import RETENTION_POLICY, log_store_classes

from .conftest import RunningStack, logsql, wait_for

pytestmark = pytest.mark.stack


def _storage_url(stack: RunningStack, index: int) -> str:
    return f"http://127.0.0.1:{stack.ports.victorialogs_storage + index}"


def test_each_record_is_stored_once_in_the_instance_of_its_retention_class(stack: RunningStack) -> None:
    run = uuid.uuid4().hex[:8]
    service = f"clawdbot-selftest-classes-{run}"
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=stack.otlp_grpc, insecure=True)))
    telemetry = Telemetry(logger_provider=provider, log_sinks=[], log_level="DEBUG")
    for level in LOG_LEVELS:
        telemetry.log(level.name, "gateway", f"{level.name} line {run}")
    audit("auth", outcome="failure", actor="client-7", telemetry=telemetry)
    assert provider.force_flush(30_000)
    provider.shutdown()

    expected: dict[str, set[str]] = {row.destination: set() for row in RETENTION_POLICY}
    for row in RETENTION_POLICY:
        expected[row.destination] |= {f"{level} line {run}" for level in row.levels}
        if row.component == "audit":
            expected[row.destination].add("auth")
    total = sum(len(v) for v in expected.values())

    def stored() -> dict[str, set[str]] | None:
        found = {
            cls.row.destination: {r["_msg"] for r in logsql(_storage_url(stack, cls.index), f'"service.name":="{service}"')}
            for cls in log_store_classes()
        }
        return found if sum(len(v) for v in found.values()) >= total else None

    found = wait_for(stored, 60, 0.5, f"{total} records across the retention classes")
    assert found == expected
    # The query node sees all of them, as one store.
    assert len(logsql(stack.victorialogs, f'"service.name":="{service}"')) == total
    print(f"\nrecords per class: { {k: sorted(v) for k, v in found.items()} }")


def _insert(url: str, rows: list[dict[str, Any]]) -> None:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    # A form content type would make the server read the body as form fields: name the JSON lines.
    req = urllib.request.Request(f"{url}/insert/jsonline?_stream_fields=service.name", data=body, method="POST",
                                 headers={"Content-Type": "application/stream+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def _too_old(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('vl_rows_dropped_total{reason="too_small_timestamp"}'):
                return int(float(line.split()[-1]))
    raise AssertionError(f"{url}/metrics has no too_small_timestamp counter")


def test_every_class_keeps_a_record_inside_its_age_limit_and_not_one_past_it(stack: RunningStack) -> None:
    """The ages are the server's own: records stamped just inside and just past each class's period.

    VictoriaLogs applies its -retentionPeriod to every record by timestamp: one older than the period is
    refused on arrival, and the per-day partition holding older data is dropped when it has aged out. So a
    record stamped (period - 1 h) ago is what that class keeps, and one stamped (period + 1 h) ago is what
    it has already let go."""
    run = uuid.uuid4().hex[:8]
    service = f"clawdbot-selftest-ages-{run}"
    refused_before = {cls.name: _too_old(_storage_url(stack, cls.index)) for cls in log_store_classes()}
    now = datetime.now(UTC)
    report = []
    for cls in log_store_classes():
        period = timedelta(hours=cls.row.retention_hours)
        rows = [
            {"_msg": f"inside {cls.row.destination} {run}", "service.name": service,
             "_time": (now - period + timedelta(hours=1)).isoformat()},
            {"_msg": f"past {cls.row.destination} {run}", "service.name": service,
             "_time": (now - period - timedelta(hours=1)).isoformat()},
        ]
        _insert(_storage_url(stack, cls.index), rows)
    for cls in log_store_classes():
        url = _storage_url(stack, cls.index)
        kept = wait_for(lambda u=url: logsql(u, f'"service.name":="{service}"'), 30, 0.5,
                        f"the in-limit record of {cls.name}")
        assert [r["_msg"] for r in kept] == [f"inside {cls.row.destination} {run}"], cls.name
        # ... and the server says why the other is not there: too old for this instance's retention.
        assert _too_old(url) == refused_before[cls.name] + 1, cls.name
        report.append(f"{cls.name} ({cls.retention_period}): kept at {cls.row.retention_hours - 1} h, "
                      f"gone at {cls.row.retention_hours + 1} h")
    print("\n" + "\n".join(report))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_logs_search_prints_the_design_records_of_one_trace(stack: RunningStack) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    run = uuid.uuid4().hex[:8]
    resource = Resource.create({"service.name": f"clawdbot-selftest-search-{run}"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=stack.otlp_grpc, insecure=True)))
    tracer_provider = TracerProvider(resource=resource)
    telemetry = Telemetry(logger_provider=provider, tracer_provider=tracer_provider, log_sinks=[])
    with tracer_provider.get_tracer("selftest").start_as_current_span("selftest.search") as span:
        telemetry.log("INFO", "gateway", f"first {run}", correlation_id="req-1", metadata={"method": "chat.send"})
        telemetry.log("ERROR", "session", f"second {run}", duration_ms=150)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    telemetry.log("ERROR", "session", f"outside the trace {run}")
    assert provider.force_flush(30_000)
    provider.shutdown()
    tracer_provider.shutdown()

    def search() -> list[dict[str, Any]] | None:
        done = _cli("logs", "search", "--trace-id", trace_id, "--json", "--url", stack.victorialogs)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines()]
        return records if len(records) >= 2 else None

    first, second = wait_for(search, 60, 1, "both records of the trace")
    assert first["message"] == f"first {run}" and second["message"] == f"second {run}"
    assert (first["level"], first["component"], first["trace_id"]) == ("INFO", "gateway", trace_id)
    assert first["correlation_id"] == "req-1" and first["metadata"] == {"method": "chat.send"}
    assert (second["level"], second["component"], second["duration_ms"]) == ("ERROR", "session", 150)
    assert first["timestamp"] <= second["timestamp"] and first["timestamp"].endswith("Z")

    floor = _cli("logs", "search", "--trace-id", trace_id, "--level", "warn", "--json", "--url", stack.victorialogs)
    assert [json.loads(line)["message"] for line in floor.stdout.splitlines()] == [f"second {run}"]
    table = _cli("logs", "search", "--trace-id", trace_id, "--url", stack.victorialogs)
    assert table.stdout.splitlines()[1].split()[1:4] == ["ERROR", "session", "second"]


def test_logs_search_says_what_is_wrong_in_one_line(stack: RunningStack) -> None:
    bad = _cli("logs", "search", "--trace-id", "not-a-trace", "--url", stack.victorialogs)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "clawdbot-otel logs search: --trace-id must be 32 lowercase hex digits, got 'not-a-trace'\n"
    dead = _cli("logs", "search", "--url", "http://127.0.0.1:9")
    assert dead.returncode == 2
    assert dead.stderr.startswith("clawdbot-otel logs search: cannot reach the log store at http://127.0.0.1:9 (")
    assert dead.stderr.endswith("start the stack with `clawdbot-otel stack up`, or point --url at your VictoriaLogs\n")
    assert dead.stderr.count("\n") == 1

"""setup() from OTEL_* variables, in fresh interpreters (setup installs process-global providers)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def _run(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    base.update({"CLAWDBOT_OTEL_OUTPUT_DIR": str(tmp_path / "telemetry"), **env})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=base, capture_output=True,
                          text=True, timeout=60, check=False)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _span_names(path: Path) -> list[str]:
    return [s["name"] for batch in _lines(path) for rs in batch["resourceSpans"] for ss in rs["scopeSpans"]
            for s in ss["spans"]]


WORKLOAD = """
import clawdbot_otel as telemetry
settings = telemetry.setup()
telemetry.increment("gateway_requests_total", {"method": "agent", "status": "success"})
with telemetry.session_span("main", model="claude-opus-4-5"):
    telemetry.log("INFO", "session", "hello")
"""


def test_without_an_endpoint_telemetry_goes_to_local_files_and_setup_says_where(tmp_path: Path) -> None:
    proc = _run(WORKLOAD, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "telemetry"
    assert "no OTLP endpoint set" in proc.stderr and str(out) in proc.stderr
    assert _span_names(out / "traces.jsonl") == ["invoke_agent main"]
    metrics = [m["name"] for b in _lines(out / "metrics.jsonl") for rm in b["resourceMetrics"]
               for sm in rm["scopeMetrics"] for m in sm["metrics"]]
    assert "gateway.requests" in metrics
    logs = [r for b in _lines(out / "logs.jsonl") for rl in b["resourceLogs"] for sl in rl["scopeLogs"]
            for r in sl["logRecords"]]
    assert [r["body"]["stringValue"] for r in logs] == ["hello"]
    assert logs[0]["traceId"]  # the record carries its span's context
    # ... and the JSON line on stderr carries the same trace id
    line = next(json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{"))
    assert line["message"] == "hello" and len(line["trace_id"]) == 32


def test_service_name_environment_and_strictness_come_from_otel_variables(tmp_path: Path) -> None:
    code = """
    import clawdbot_otel as telemetry
    s = telemetry.setup(announce=None)
    print(s.service_name, s.environment, s.strict, s.log_level, s.metric_export_interval_ms)
    try:
        telemetry.increment("no_such_metric")
    except telemetry.TelemetryError as e:
        print("raised:", e)
    """
    dev = _run(code, {"OTEL_SERVICE_NAME": "gw-1",
                      "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=development"}, tmp_path)
    assert dev.stdout.splitlines()[0] == "gw-1 development True DEBUG 5000"
    assert "raised: unknown metric 'no_such_metric'" in dev.stdout
    prod = _run(code, {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=production"}, tmp_path)
    assert prod.stdout.splitlines() == ["clawdbot-gateway production False INFO 15000"]


def _resource_instance_ids(path: Path) -> set[str]:
    return {a["value"]["stringValue"] for batch in _lines(path) for rs in batch["resourceSpans"]
            for a in rs["resource"]["attributes"] if a["key"] == "service.instance.id"}


def test_the_instance_id_is_stable_across_restarts_unless_the_user_sets_one(tmp_path: Path) -> None:
    code = """
    import clawdbot_otel as telemetry
    telemetry.setup(announce=None{extra})
    with telemetry.request_span("x"):
        pass
    """
    traces = tmp_path / "telemetry" / "traces.jsonl"
    for _ in range(2):  # two runs ("restarts") of the same service on this host
        assert _run(code.format(extra=""), {}, tmp_path).returncode == 0
    assert _resource_instance_ids(traces) == {socket.gethostname()}
    traces.unlink()
    assert _run(code.format(extra=", instance_id='gw-host:18789'"), {}, tmp_path).returncode == 0
    assert _resource_instance_ids(traces) == {"gw-host:18789"}
    traces.unlink()
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-7"}
    assert _run(code.format(extra=", instance_id='gw-host:18789'"), env, tmp_path).returncode == 0
    assert _resource_instance_ids(traces) == {"pod-7"}


def test_the_sdk_keeps_every_trace_unless_the_user_sets_a_head_sampler(tmp_path: Path) -> None:
    code = """
    import clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    for i in range(200):
        with telemetry.request_span("health"):
            pass
    """
    _run(code, {}, tmp_path)
    assert len(_span_names(tmp_path / "telemetry" / "traces.jsonl")) == 200
    (tmp_path / "telemetry" / "traces.jsonl").unlink()
    _run(code, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, tmp_path)
    assert 0 < len(_span_names(tmp_path / "telemetry" / "traces.jsonl")) < 60


def test_otlp_endpoint_selects_the_protocol_exporters(tmp_path: Path) -> None:
    code = """
    from clawdbot_otel import Settings
    print(Settings.from_env().exporters)
    """
    http = _run(code, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, tmp_path)
    assert http.stdout.strip() == "{'traces': 'otlp/http', 'metrics': 'otlp/http', 'logs': 'otlp/http'}"
    mixed = _run(code, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                        "OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "console"}, tmp_path)
    assert mixed.stdout.strip() == "{'traces': 'otlp/grpc', 'metrics': 'console', 'logs': 'none'}"


def test_a_dead_collector_never_breaks_the_host(tmp_path: Path) -> None:
    code = """
    import time, clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    t0 = time.perf_counter()
    for i in range(2000):
        telemetry.increment("gateway_requests_total", {"method": "agent", "status": "success"})
        with telemetry.request_span("agent"):
            telemetry.log("DEBUG", "gateway", "x")
    print("loop ok", round(time.perf_counter() - t0, 2))
    """
    proc = _run(code, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
                       "OTEL_BSP_EXPORT_TIMEOUT": "1000"}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("loop ok")


def test_fork_child_and_parent_both_export(tmp_path: Path) -> None:
    code = """
    import os, clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    with telemetry.request_span("before-fork"):
        pass
    pid = os.fork()
    if pid == 0:
        with telemetry.request_span("child"):
            pass
        telemetry.shutdown()
        os._exit(0)
    os.waitpid(pid, 0)
    with telemetry.request_span("parent"):
        pass
    """
    proc = _run(code, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = _span_names(tmp_path / "telemetry" / "traces.jsonl")
    assert sorted(names) == ["gateway.request before-fork", "gateway.request child", "gateway.request parent"]


def _last_counter_by_instance(path: Path, name: str) -> dict[str, float]:
    """The last exported cumulative value of counter `name`, per service.instance.id."""
    out: dict[str, float] = {}
    for batch in _lines(path):
        for rm in batch["resourceMetrics"]:
            attrs = {a["key"]: a["value"].get("stringValue") for a in rm["resource"]["attributes"]}
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] == name:
                        points = metric["sum"]["dataPoints"]
                        out[attrs.get("service.instance.id") or ""] = sum(p.get("asDouble", 0) or
                                                                         float(p.get("asInt", 0)) for p in points)
    return out


def test_a_forked_child_reports_only_its_own_metrics(tmp_path: Path) -> None:
    code = """
    import os, clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    labels = {"method": "agent", "status": "success"}
    telemetry.increment("gateway_requests_total", labels)
    pid = os.fork()
    if pid == 0:
        telemetry.increment("gateway_requests_total", labels)
        telemetry.shutdown()
        os._exit(0)
    os.waitpid(pid, 0)
    telemetry.increment("gateway_requests_total", labels)
    """
    proc = _run(code, {"OTEL_METRIC_EXPORT_INTERVAL": "100"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    last = _last_counter_by_instance(tmp_path / "telemetry" / "metrics.jsonl", "gateway.requests")
    assert len(last) == 2, last
    parent_instance = min(last, key=len)
    child_instance = max(last, key=len)
    assert child_instance.startswith(parent_instance + "-")  # the child's own service.instance.id
    assert (last[parent_instance], last[child_instance]) == (2, 1)  # 3 increments, none reported twice


def test_setup_after_shutdown_records_again(tmp_path: Path) -> None:
    code = """
    import clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    with telemetry.request_span("first"):
        pass
    telemetry.shutdown()
    telemetry.setup(announce=None)
    with telemetry.request_span("second"):
        pass
    telemetry.increment("gateway_requests_total", {"method": "agent", "status": "success"})
    """
    proc = _run(code, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "shutdown" not in proc.stderr.lower()
    assert _span_names(tmp_path / "telemetry" / "traces.jsonl") == ["gateway.request first", "gateway.request second"]
    assert list(_last_counter_by_instance(tmp_path / "telemetry" / "metrics.jsonl", "gateway.requests").values()) == [1]


def test_bad_setting_values_warn_and_fall_back(tmp_path: Path) -> None:
    code = """
    import clawdbot_otel as telemetry
    s = telemetry.setup(announce=None)
    print(s.metric_export_interval_ms, s.log_level)
    """
    proc = _run(code, {"OTEL_METRIC_EXPORT_INTERVAL": "soon", "CLAWDBOT_OTEL_LOG_LEVEL": "LOUD"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["15000", "INFO"]
    assert "OTEL_METRIC_EXPORT_INTERVAL='soon' is not a positive integer" in proc.stderr
    assert "unknown log level 'LOUD'" in proc.stderr


def test_under_opentelemetry_instrument_existing_providers_are_reused(tmp_path: Path) -> None:
    """What `opentelemetry-instrument` does: global SDK providers exist before our setup runs."""
    code = """
    import logging
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    exporter = InMemorySpanExporter()
    tp = TracerProvider(); tp.add_span_processor(SimpleSpanProcessor(exporter)); trace.set_tracer_provider(tp)
    logging.getLogger().addHandler(LoggingHandler(logger_provider=LoggerProvider()))
    import clawdbot_otel as telemetry
    telemetry.setup()
    with telemetry.tool_call_span("read"):
        pass
    print([s.name for s in exporter.get_finished_spans()])
    print(sum(isinstance(h, LoggingHandler) for h in logging.getLogger().handlers))
    """
    proc = _run(code, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['execute_tool read']", "0"]
    assert "reusing the global tracer provider" in proc.stderr


def test_log_files_are_opt_in_and_follow_the_retention_layout(tmp_path: Path) -> None:
    code = """
    import clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    telemetry.log("INFO", "gateway", "to a file")
    telemetry.log("ERROR", "gateway", "an error")
    telemetry.shutdown()
    """
    logs = tmp_path / "logs"
    proc = _run(code, {"CLAWDBOT_OTEL_LOG_DIR": str(logs)}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = [json.loads(x) for f in (logs / "info").glob("*.log") for x in f.read_text().splitlines()]
    errors = [json.loads(x) for f in (logs / "error").glob("*.log") for x in f.read_text().splitlines()]
    assert [r["message"] for r in info] == ["to a file"]
    assert [r["message"] for r in errors] == ["an error"]
    assert "to a file" in proc.stderr  # stderr keeps its copy
    (tmp_path / "other").mkdir()
    plain = _run(code, {"HOME": str(tmp_path / "other")}, tmp_path)
    assert plain.returncode == 0 and not any((tmp_path / "other").rglob("*.log"))


def test_gauges_work_when_the_default_instance_was_created_before_setup(tmp_path: Path) -> None:
    """The module-level instance exists at import (bound to the global proxy); setup() rebinds it. The SDK
    keeps the first observable-gauge callback per name, so gauges must survive the rebind."""
    code = """
    import clawdbot_otel as telemetry
    telemetry.setup(announce=None)
    telemetry.gauge("spawn_queue_depth", 4)
    telemetry.observe("resource_disk_free_bytes", lambda: [(123.0, {"path": "/data"})])
    telemetry.shutdown()
    """
    proc = _run(code, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    points = {m["name"]: m["gauge"]["dataPoints"][0] for b in _lines(tmp_path / "telemetry" / "metrics.jsonl")
              for rm in b["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"] if "gauge" in m}
    assert float(points["spawn.queue.depth"].get("asDouble", points["spawn.queue.depth"].get("asInt"))) == 4
    assert points["resource.disk.free"]["asDouble"] == 123.0


def test_the_asyncio_instrumentation_traces_the_coroutines_the_user_names(tmp_path: Path) -> None:
    code = """
    import asyncio, clawdbot_otel as telemetry
    telemetry.setup(announce=None)

    async def nightly_report():
        await asyncio.sleep(0)

    async def main():
        with telemetry.job_span("nightly"):
            await asyncio.create_task(nightly_report())

    asyncio.run(main())
    """
    proc = _run(code, {"OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE": "nightly_report"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = _span_names(tmp_path / "telemetry" / "traces.jsonl")
    assert "cron.job nightly" in names
    assert any("nightly_report" in n for n in names), names

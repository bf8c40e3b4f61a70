"""Metrics to Prometheus and logs to Loki through the collector, with the SDK's own providers."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from clawdbot_otel.stack import repo_root

from .conftest import RunningStack, http_json, wait_for

pytestmark = pytest.mark.stack


def test_counter_and_histogram_arrive_in_prometheus_with_conventional_names(stack: RunningStack) -> None:
    run = uuid.uuid4().hex[:8]
    service = f"clawdbot-selftest-metrics-{run}"
    resource = Resource.create(
        {"service.name": service, "service.instance.id": f"instance-{run}", "deployment.environment": "selftest"}
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=stack.otlp_grpc, insecure=True), export_interval_millis=500
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("clawdbot.selftest")
    counter = meter.create_counter("clawdbot.selftest.requests", unit="{request}", description="selftest requests")
    histogram = meter.create_histogram("clawdbot.selftest.duration", unit="s", description="selftest duration")
    counter.add(3, {"route": "chat", "outcome": "ok"})
    counter.add(1, {"route": "chat", "outcome": "error"})
    histogram.record(0.25, {"route": "chat"})
    provider.force_flush()
    provider.shutdown()

    def query(promql: str) -> list[Any]:
        status, body = http_json(f"{stack.prometheus}/api/v1/query", {"query": promql})
        assert status == 200, body
        result: list[Any] = body["data"]["result"]
        return result

    series = wait_for(
        lambda: query(f'clawdbot_selftest_requests_total{{job="{service}"}}'),
        60,
        0.5,
        "clawdbot_selftest_requests_total in Prometheus",
    )
    by_outcome = {s["metric"]["outcome"]: s for s in series}
    assert set(by_outcome) == {"ok", "error"}
    ok = by_outcome["ok"]
    assert ok["metric"]["route"] == "chat"
    assert ok["metric"]["instance"] == f"instance-{run}"
    assert float(ok["value"][1]) == 3.0
    # Unit "s" becomes the _seconds suffix; histograms get _bucket/_sum/_count.
    buckets = wait_for(
        lambda: query(f'clawdbot_selftest_duration_seconds_count{{job="{service}"}}'), 30, 0.5, "histogram"
    )
    assert float(buckets[0]["value"][1]) == 1.0
    # Other resource attributes are on target_info, joinable on job/instance.
    info = wait_for(lambda: query(f'target_info{{job="{service}"}}'), 30, 0.5, "target_info")
    assert info[0]["metric"]["deployment_environment"] == "selftest"
    print(f"\nPrometheus series: {[s['metric'] for s in series]}")


def test_log_in_span_arrives_in_loki_with_trace_context_and_trace_resolves_in_jaeger(stack: RunningStack) -> None:
    run = uuid.uuid4().hex[:8]
    service = f"clawdbot-selftest-logs-{run}"
    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=stack.otlp_grpc, insecure=True)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=stack.otlp_grpc, insecure=True))
    )
    tracer = tracer_provider.get_tracer("clawdbot.selftest")
    logger = logger_provider.get_logger("clawdbot.selftest")
    started_ns = time.time_ns()
    span = tracer.start_span("selftest.logged-operation")
    # ERROR status makes the trace survive tail sampling whatever its trace id hashes to.
    span.set_status(Status(StatusCode.ERROR, "selftest"))
    logger.emit(
        context=set_span_in_context(span),
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        body=f"selftest log line {run}",
        attributes={"selftest.run": run},
    )
    span.end()
    ctx = span.get_span_context()
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    assert logger_provider.force_flush(30_000)
    assert tracer_provider.force_flush(30_000)
    logger_provider.shutdown()
    tracer_provider.shutdown()

    def loki_streams() -> list[Any]:
        status, body = http_json(
            f"{stack.loki}/loki/api/v1/query_range",
            {
                "query": f'{{service_name="{service}"}}',
                "start": str(started_ns - 60 * 10**9),
                "end": str(time.time_ns() + 60 * 10**9),
                "limit": "100",
            },
            # Separate stream labels from structured metadata in the answer.
            headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"},
        )
        assert status == 200, body
        streams: list[Any] = body["data"]["result"]
        return streams

    streams = wait_for(loki_streams, 60, 0.5, "the log line in Loki")
    assert len(streams) == 1
    stream = streams[0]
    assert stream["stream"]["service_name"] == service
    assert "trace_id" not in stream["stream"]
    values = stream["values"]
    assert len(values) == 1
    _ts, line, meta = values[0]
    assert line == f"selftest log line {run}"
    structured = meta["structuredMetadata"]
    assert structured["trace_id"] == trace_id
    assert structured["span_id"] == span_id
    print(f"\nLoki stream labels {stream['stream']}, structured metadata {structured}")

    def jaeger_trace() -> Any:
        status, body = http_json(f"{stack.jaeger}/api/traces/{trace_id}")
        return body["data"] if status == 200 else None

    data = wait_for(jaeger_trace, 30, 0.5, f"trace {trace_id} in Jaeger")
    assert data[0]["spans"][0]["spanID"] == span_id


def test_loki_applies_the_log_retention_policy_to_real_streams(stack: RunningStack) -> None:
    """Loki loaded the per-stream rules, and the labels their selectors use exist on real streams."""
    import yaml

    from clawdbot_otel import Telemetry, audit

    def get(path: str) -> str:
        with urllib.request.urlopen(f"{stack.loki}{path}", timeout=10) as resp:
            return str(resp.read().decode())

    config = yaml.safe_load(get("/config"))
    assert config["compactor"]["retention_enabled"] is True
    assert Path(config["runtime_config"]["file"]).resolve() == (repo_root() / "deploy/loki/retention.yaml").resolve()
    # Loki refuses to start on a runtime config it cannot parse; and it says whether the last (re)load worked
    assert 'loki_runtime_config_last_reload_successful{config="loki"} 1' in get("/metrics")

    run = uuid.uuid4().hex[:8]
    service = f"clawdbot-selftest-retention-{run}"
    logger_provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=stack.otlp_grpc, insecure=True)))
    telemetry = Telemetry(logger_provider=logger_provider, log_sinks=[])
    telemetry.log("INFO", "gateway", f"an info line {run}")
    audit("auth", outcome="failure", actor="client-7", telemetry=telemetry)
    assert logger_provider.force_flush(30_000)
    logger_provider.shutdown()

    def streams(selector: str) -> list[Any]:
        status, body = http_json(f"{stack.loki}/loki/api/v1/query_range", {
            "query": selector, "start": str(time.time_ns() - 600 * 10**9), "end": str(time.time_ns() + 60 * 10**9)})
        assert status == 200, body
        return list(body["data"]["result"])

    # each rule's selector, narrowed to this run's service, finds exactly the record it is meant for
    audit_streams = wait_for(lambda: streams(f'{{service_name="{service}", component="audit"}}'), 60, 0.5,
                             "the audit record under its component label")
    assert [v[1] for s in audit_streams for v in s["values"]] == ["auth"]
    info = wait_for(lambda: streams(f'{{service_name="{service}", severity_text=~"(?i)INFO"}}'), 60, 0.5,
                    "the INFO record under its severity label")
    assert [v[1] for s in info for v in s["values"]] == [f"an info line {run}"]

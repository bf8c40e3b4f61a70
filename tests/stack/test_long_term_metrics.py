"""The design's aggregated metrics live 90 days: the raw Prometheus evaluates the Metric Aggregation rules
and remote-writes their outputs, and only those, to the long-term Prometheus."""

from __future__ import annotations

import time
import uuid

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from clawdbot_otel import Telemetry

from .conftest import RunningStack, http_json, wait_for

pytestmark = pytest.mark.stack


def _query(url: str, promql: str) -> list[dict[str, object]]:
    status, body = http_json(f"{url}/api/v1/query", {"query": promql})
    assert status == 200, body
    return list(body["data"]["result"])


def test_aggregated_series_reach_the_long_term_prometheus_and_raw_ones_do_not(stack: RunningStack) -> None:
    run = uuid.uuid4().hex[:8]
    service = f"clawdbot-selftest-longterm-{run}"
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=stack.otlp_grpc, insecure=True),
                                           export_interval_millis=1000)
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    telemetry = Telemetry(meter_provider=provider, log_sinks=[], strict=True)
    # 20 s of traffic: the 1-minute rules see at least two samples whichever minute they run in.
    for _ in range(20):
        telemetry.increment("gateway_requests_total", {"method": "chat.send", "status": "success"})
        time.sleep(1)
    provider.shutdown()

    longterm = stack.info.prometheus_longterm_url
    series = wait_for(
        lambda: _query(longterm, f'clawdbot:gateway_requests:increase1m{{job="{service}"}} > 0'),
        150, 2, "the request-count aggregate in the long-term Prometheus")
    print(f"\nlong-term series: {series}")
    assert _query(stack.prometheus, f'gateway_requests_total{{job="{service}"}}'), "the raw series is in the raw store"
    assert not _query(longterm, f'gateway_requests_total{{job="{service}"}}'), "raw samples must not be kept 90 days"
    flags = http_json(f"{longterm}/api/v1/status/flags")[1]["data"]
    assert flags["storage.tsdb.retention.time"] == "90d"
    raw = http_json(f"{stack.prometheus}/api/v1/status/flags")[1]["data"]["storage.tsdb.retention.time"]
    assert raw in ("7d", "1w")  # Prometheus prints durations in its own units

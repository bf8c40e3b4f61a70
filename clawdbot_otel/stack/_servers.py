"""What each server of the native stack is: its ports, command line, environment, readiness URL and data
folder, and the configuration files written for a port set. `_launch` runs and supervises them.

Every address in the repository's configuration files (otel-collector/*.yaml, deploy/*) is an environment
variable with a docker-compose default; here they are set to 127.0.0.1 and this stack's ports.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clawdbot_otel.logfiles import LogStoreClass, endpoint_env, log_store_classes

from ._build import Binaries, StackError, cache_dir
from ._jaeger_ui import installed_jaeger_ui

__all__ = [
    "LONG_TERM_WRITE_URL",
    "PORT_OFFSET_ENV",
    "AlertConfig",
    "Ports",
    "ServerSpec",
    "StackInfo",
    "check_ports_free",
    "collector_env",
    "server_specs",
]

PORT_OFFSET_ENV = "CLAWDBOT_OTEL_PORT_OFFSET"
_PORT_ENV_PREFIX = "CLAWDBOT_OTEL_PORT_"
# Where deploy/prometheus/prometheus.yml sends the aggregated series (the compose service name).
LONG_TERM_WRITE_URL = "http://prometheus-longterm:9090/api/v1/write"


@dataclasses.dataclass(frozen=True)
class Ports:
    """Every port the stack binds on 127.0.0.1.

    The public ones are those of docker-compose.yml; the internal ones are chosen so that the clawdbot
    collector and Jaeger (both OpenTelemetry collectors, both defaulting to 4317/4318/8888/13133) and the
    other servers never clash. `shifted(n)` moves the whole set by n; each port can also be moved alone
    with $CLAWDBOT_OTEL_PORT_<FIELD> (e.g. CLAWDBOT_OTEL_PORT_PROMETHEUS=19090).
    """

    otlp_grpc: int = 4317  # collector OTLP/gRPC receiver (what applications export to)
    otlp_http: int = 4318  # collector OTLP/HTTP receiver
    collector_health: int = 13133  # collector health_check extension
    collector_metrics: int = 8888  # collector's own telemetry (otelcol_*)
    jaeger_ui: int = 16686  # Jaeger UI + query HTTP API
    jaeger_query_grpc: int = 16685
    jaeger_otlp_grpc: int = 14317  # Jaeger's OTLP receiver, fed by the collector
    jaeger_otlp_http: int = 14318
    jaeger_health: int = 14133
    jaeger_metrics: int = 14269
    prometheus: int = 9090  # raw samples, 7 days
    prometheus_longterm: int = 9091  # the recording rules' outputs (aggregated metrics), 90 days
    victorialogs: int = 9428  # the log store's query node: web UI /select/vmui/, LogsQL /select/logsql/*
    victorialogs_storage: int = 9481  # first of one port per retention class (9481 debug ... 9485 audit)
    alertmanager: int = 9093

    def victorialogs_storage_port(self, cls: LogStoreClass) -> int:
        return self.victorialogs_storage + cls.index

    def shifted(self, offset: int) -> Ports:
        moved = {f.name: getattr(self, f.name) + offset for f in dataclasses.fields(self)}
        bad = {k: p for k, p in moved.items() if not 0 < p < 65536}
        if bad:
            raise StackError(f"port offset {offset} moves ports out of range: {bad}")
        return Ports(**moved)

    @classmethod
    def from_env(cls, offset: int | None = None, env: Mapping[str, str] | None = None) -> Ports:
        """Defaults shifted by `offset` (else $CLAWDBOT_OTEL_PORT_OFFSET), then per-port overrides."""
        env = os.environ if env is None else env
        if offset is None:
            raw = env.get(PORT_OFFSET_ENV, "").strip()
            try:
                offset = int(raw) if raw else 0
            except ValueError:
                raise StackError(f"{PORT_OFFSET_ENV}={raw!r} is not an integer") from None
        ports = cls().shifted(offset)
        overrides: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(_PORT_ENV_PREFIX + f.name.upper(), "").strip()
            if raw:
                try:
                    overrides[f.name] = int(raw)
                except ValueError:
                    raise StackError(f"{_PORT_ENV_PREFIX}{f.name.upper()}={raw!r} is not a port number") from None
        ports = dataclasses.replace(ports, **overrides)
        values = [getattr(ports, f.name) for f in dataclasses.fields(cls)]
        values += [ports.victorialogs_storage_port(c) for c in log_store_classes()[1:]]
        if len(set(values)) != len(values):
            raise StackError(f"the stack's ports must be distinct: {dataclasses.asdict(ports)}")
        return ports


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """Where a running stack listens (all on 127.0.0.1)."""

    stack_dir: Path
    ports: Ports
    pids: dict[str, int]

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.otlp_grpc}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.otlp_http}"

    @property
    def jaeger_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.jaeger_ui}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def victorialogs_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.victorialogs}"

    @property
    def prometheus_longterm_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus_longterm}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager}"

    def urls(self) -> dict[str, str]:
        return {
            "OTLP gRPC (collector)": self.otlp_grpc_endpoint,
            "OTLP HTTP (collector)": self.otlp_http_endpoint,
            "Jaeger UI": self.jaeger_url,
            "Prometheus": self.prometheus_url,
            "Prometheus, 90-day aggregates": self.prometheus_longterm_url,
            "VictoriaLogs (logs UI: /select/vmui/)": self.victorialogs_url,
            "Alertmanager": self.alertmanager_url,
        }


@dataclasses.dataclass(frozen=True)
class AlertConfig:
    """The alert rules Prometheus loads and the routing Alertmanager uses; None = the repository's deploy/ files.

    rules_dir: a folder of Prometheus rule files (*.yml), copied in place of deploy/prometheus/rules/.
    alertmanager_config: an alertmanager.yml used in place of deploy/alertmanager/alertmanager.yml.
    resend_delay_s: Prometheus' `--rules.alert.resend-delay` (its default: 1 minute), how soon a firing
        or resolved alert is sent to Alertmanager again; a send lost while Prometheus reloads waits that long.
    """

    rules_dir: Path | None = None
    alertmanager_config: Path | None = None
    resend_delay_s: float | None = None

    def to_state(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state(cls, data: Mapping[str, Any] | None) -> AlertConfig:
        data = data or {}
        return cls(
            rules_dir=Path(data["rules_dir"]) if data.get("rules_dir") else None,
            alertmanager_config=Path(data["alertmanager_config"]) if data.get("alertmanager_config") else None,
            resend_delay_s=data.get("resend_delay_s"),
        )


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    ports: dict[str, int]  # Ports field -> port, for the "port taken" message
    data_dir: Path | None = None


# ------------------------------------------------------------------------------------ server commands


def _write_prometheus_config(
    repo: Path, conf_dir: Path, ports: Ports, collector_metrics: list[int], rules_dir: Path | None = None
) -> Path:
    """Copy deploy/prometheus (config + rules, or `rules_dir`'s) and write file_sd targets for this port set.

    Each file is replaced only when its content changes and the folders are never removed: `stack start
    NAME` comes here while both Prometheus servers run and watch `targets/`, and a folder deleted under
    them loses their file_sd watch (no scrape targets until the 5-minute re-read; the fault tests saw it).
    """
    src = repo / "deploy" / "prometheus"
    rules = rules_dir or src / "rules"
    config = (src / "prometheus.yml").read_text()
    if LONG_TERM_WRITE_URL not in config:
        raise StackError(f"{src / 'prometheus.yml'} has no remote_write to {LONG_TERM_WRITE_URL}")
    local = f"http://127.0.0.1:{ports.prometheus_longterm}/api/v1/write"
    files = {
        "prometheus.yml": config.replace(LONG_TERM_WRITE_URL, local),
        "longterm.yml": (src / "longterm.yml").read_text(),
        **{f"rules/{rule.name}": rule.read_text() for rule in sorted(rules.glob("*.yml"))},
    }
    targets = {
        "prometheus": [ports.prometheus],
        "otel-collector": collector_metrics,
        "jaeger": [ports.jaeger_metrics],
        "victorialogs": [ports.victorialogs] + [ports.victorialogs_storage_port(c) for c in log_store_classes()],
        "alertmanager": [ports.alertmanager],
        "prometheus-longterm": [ports.prometheus_longterm],
    }
    for job, job_ports in targets.items():
        listed = ", ".join(f"'127.0.0.1:{port}'" for port in job_ports)
        files[f"targets/{job}.yml"] = f"# written by `clawdbot-otel stack up`\n- targets: [{listed}]\n"
    for sub in ("rules", "targets"):
        (conf_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in set((conf_dir / sub).iterdir()) - {conf_dir / name for name in files}:
            stale.unlink()
    for name, text in files.items():
        path = conf_dir / name
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    return conf_dir / "prometheus.yml"


def collector_env(
    ports: Ports,
    *,
    otlp_grpc: int | None = None,
    otlp_http: int | None = None,
    health: int | None = None,
    metrics: int | None = None,
) -> dict[str, str]:
    """Environment for otel-collector/config.yaml pointing at this stack (receiver ports overridable)."""
    return {
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{otlp_grpc or ports.otlp_grpc}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{otlp_http or ports.otlp_http}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{health or ports.collector_health}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(metrics or ports.collector_metrics),
        "JAEGER_OTLP_ENDPOINT": f"127.0.0.1:{ports.jaeger_otlp_grpc}",
        "PROMETHEUS_REMOTE_WRITE_URL": f"http://127.0.0.1:{ports.prometheus}/api/v1/write",
        **{
            endpoint_env(c): f"http://127.0.0.1:{ports.victorialogs_storage_port(c)}/insert/opentelemetry"
            for c in log_store_classes()
        },
    }


def _victorialogs_servers(binaries: Binaries, data: Path, ports: Ports, base: Mapping[str, str]) -> list[ServerSpec]:
    """One storage instance per retention class (its own -retentionPeriod), one query node over them."""
    loopback = "127.0.0.1"
    servers = []
    for cls in log_store_classes():
        port = ports.victorialogs_storage_port(cls)
        servers.append(ServerSpec(
            cls.name,
            [
                str(binaries.victorialogs),
                f"-httpListenAddr={loopback}:{port}",
                f"-storageDataPath={data / 'victorialogs' / cls.row.destination}",
                f"-retentionPeriod={cls.retention_period}",
                "-loggerLevel=WARN",
            ],
            dict(base),
            f"http://{loopback}:{port}/health",
            {"victorialogs_storage": port},
            data / "victorialogs" / cls.row.destination,
        ))
    storage = ",".join(f"{loopback}:{ports.victorialogs_storage_port(c)}" for c in log_store_classes())
    servers.append(ServerSpec(
        "victorialogs",
        [
            str(binaries.victorialogs),
            f"-httpListenAddr={loopback}:{ports.victorialogs}",
            f"-storageNode={storage}",
            # Writes go to a class's own instance (the collector routes them); one written here would be
            # spread over the classes regardless of its level.
            "-insert.disable",
            "-loggerLevel=WARN",
        ],
        dict(base),
        f"http://{loopback}:{ports.victorialogs}/health",
        {"victorialogs": ports.victorialogs},
    ))
    return servers


def _jaeger_files_env(repo: Path, root: Path, ports: Ports) -> dict[str, str]:
    """Jaeger's Badger folder (data/jaeger), the installed UI if any, and the UI config from deploy/jaeger with
    its links (written for the default ports) moved to this port set."""
    badger = root / "data" / "jaeger"
    badger.mkdir(parents=True, exist_ok=True)
    moved = {getattr(Ports(), f.name): getattr(ports, f.name) for f in dataclasses.fields(Ports)}
    template = (repo / "deploy" / "jaeger" / "ui-config.json").read_text()
    ui_config = root / "config" / "jaeger" / "ui-config.json"
    ui_config.parent.mkdir(parents=True, exist_ok=True)
    ui_config.write_text(re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{moved.get(int(m[1]), m[1])}", template))
    env = {"JAEGER_BADGER_DIR": str(badger), "JAEGER_UI_CONFIG": str(ui_config)}
    assets = installed_jaeger_ui(cache_dir())
    if assets is not None:  # else Jaeger's placeholder page (or the user's own $JAEGER_UI_ASSETS_PATH)
        env["JAEGER_UI_ASSETS_PATH"] = str(assets)
    return env


def _collector_servers(
    binaries: Binaries, repo: Path, data: Path, ports: Ports, *, base: Mapping[str, str],
    extra_env: Mapping[str, str], samplers: int,
) -> list[ServerSpec]:
    """The collector on the usual ports; with `samplers` > 0 it is the first tier (loadbalancer.yaml: traces
    routed by trace id) in front of that many tail-sampling collectors, each on the collector's four ports
    + 10 x its number (docs/scaling.md)."""
    config = repo / "otel-collector"

    def collector(name: str, files: list[str], shift: int, env: Mapping[str, str]) -> ServerSpec:
        own = {"otlp_grpc": ports.otlp_grpc + shift, "otlp_http": ports.otlp_http + shift,
               "collector_health": ports.collector_health + shift, "collector_metrics": ports.collector_metrics + shift}
        return ServerSpec(
            name,
            [str(binaries.collector), *(arg for f in files for arg in ("--config", str(config / f)))],
            {**base, **collector_env(ports, otlp_grpc=own["otlp_grpc"], otlp_http=own["otlp_http"],
                                     health=own["collector_health"], metrics=own["collector_metrics"]),
             "OTELCOL_STORAGE_DIR": str(data / name), **extra_env, **env},
            f"http://127.0.0.1:{own['collector_health']}/",
            own,
            data / name,
        )

    sampler = ["config.yaml", "logs-victorialogs.yaml"]
    tier2 = [collector(f"otel-sampler-{i}", sampler, 10 * i, {}) for i in range(1, samplers + 1)]
    if not tier2:
        return [collector("otel-collector", sampler, 0, {})]
    ring = json.dumps([f"127.0.0.1:{s.ports['otlp_grpc']}" for s in tier2])
    tier1 = collector("otel-collector", ["config.yaml", "loadbalancer.yaml", "logs-victorialogs.yaml"], 0,
                      {"OTELCOL_SAMPLERS": ring})
    return [*tier2, tier1]


def server_specs(binaries: Binaries, repo: Path, root: Path, ports: Ports, extra_env: Mapping[str, str],
             *, alerts: AlertConfig, samplers: int = 0) -> list[ServerSpec]:
    data = root / "data"
    base = dict(os.environ)
    collectors = _collector_servers(binaries, repo, data, ports, base=base, extra_env=extra_env, samplers=samplers)
    prom_config = _write_prometheus_config(repo, root / "config" / "prometheus", ports,
                                           [c.ports["collector_metrics"] for c in collectors], alerts.rules_dir)
    alertmanager_config = alerts.alertmanager_config or repo / "deploy" / "alertmanager" / "alertmanager.yml"
    loopback = "127.0.0.1"
    return [
        *_victorialogs_servers(binaries, data, ports, base),
        ServerSpec(
            "jaeger",
            [str(binaries.jaeger), "--config", str(repo / "deploy" / "jaeger" / "config.yaml")],
            {
                **base,
                "JAEGER_OTLP_GRPC_ENDPOINT": f"{loopback}:{ports.jaeger_otlp_grpc}",
                "JAEGER_OTLP_HTTP_ENDPOINT": f"{loopback}:{ports.jaeger_otlp_http}",
                "JAEGER_QUERY_HTTP_ENDPOINT": f"{loopback}:{ports.jaeger_ui}",
                "JAEGER_QUERY_GRPC_ENDPOINT": f"{loopback}:{ports.jaeger_query_grpc}",
                "JAEGER_HEALTH_ENDPOINT": f"{loopback}:{ports.jaeger_health}",
                "JAEGER_TELEMETRY_HOST": loopback,
                "JAEGER_TELEMETRY_PORT": str(ports.jaeger_metrics),
                **_jaeger_files_env(repo, root, ports),
            },
            f"http://{loopback}:{ports.jaeger_health}/status",
            {
                "jaeger_ui": ports.jaeger_ui,
                "jaeger_query_grpc": ports.jaeger_query_grpc,
                "jaeger_otlp_grpc": ports.jaeger_otlp_grpc,
                "jaeger_otlp_http": ports.jaeger_otlp_http,
                "jaeger_health": ports.jaeger_health,
                "jaeger_metrics": ports.jaeger_metrics,
            },
            data / "jaeger",
        ),
        ServerSpec(
            "prometheus",
            [
                str(binaries.prometheus),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={data / 'prometheus'}",
                "--storage.tsdb.retention.time=7d",
                f"--web.listen-address={loopback}:{ports.prometheus}",
                "--web.enable-remote-write-receiver",
                *([f"--rules.alert.resend-delay={int(alerts.resend_delay_s * 1000)}ms"]
                  if alerts.resend_delay_s is not None else []),
            ],
            base,
            f"http://{loopback}:{ports.prometheus}/-/ready",
            {"prometheus": ports.prometheus},
            data / "prometheus",
        ),
        ServerSpec(
            "prometheus-longterm",
            [
                str(binaries.prometheus),
                f"--config.file={prom_config.parent / 'longterm.yml'}",
                f"--storage.tsdb.path={data / 'prometheus-longterm'}",
                "--storage.tsdb.retention.time=90d",
                f"--web.listen-address={loopback}:{ports.prometheus_longterm}",
                "--web.enable-remote-write-receiver",
            ],
            base,
            f"http://{loopback}:{ports.prometheus_longterm}/-/ready",
            {"prometheus_longterm": ports.prometheus_longterm},
            data / "prometheus-longterm",
        ),
        ServerSpec(
            "alertmanager",
            [
                str(binaries.alertmanager),
                f"--config.file={alertmanager_config}",
                f"--storage.path={data / 'alertmanager'}",
                f"--web.listen-address={loopback}:{ports.alertmanager}",
                "--cluster.listen-address=",  # no clustering: no gossip port (default 9094)
            ],
            base,
            f"http://{loopback}:{ports.alertmanager}/-/ready",
            {"alertmanager": ports.alertmanager},
            data / "alertmanager",
        ),
        *collectors,
    ]


# ------------------------------------------------------------------------------------------ processes


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports_free(servers_ports: Mapping[str, Mapping[str, int]]) -> None:
    """StackError naming the first taken port, its server and how to move it."""
    for server, ports in servers_ports.items():
        for field, port in ports.items():
            if not _port_free(port):
                raise StackError(
                    f"port {port} ({server}, `{field}`) is already in use on 127.0.0.1. Stop whatever holds it "
                    f"(`ss -ltnp 'sport = :{port}'`), or shift the whole port set with `--port-offset N` / "
                    f"{PORT_OFFSET_ENV}=N, or move only this port with {_PORT_ENV_PREFIX}{field.upper()}=<port>"
                )

"""Start, check and stop the native stack: its server processes on 127.0.0.1.

State lives in one directory (default <cache>/stack, or $CLAWDBOT_OTEL_STACK_DIR):
  state.json         pids, binaries and ports of the servers this launcher started
  data/<server>/     Prometheus TSDB, VictoriaLogs partitions (one folder per retention class),
                     Jaeger's Badger store, Alertmanager silences, the collector's persistent queues
  logs/<server>.log  stdout+stderr of each server (truncated by each `up`)
  config/prometheus/ prometheus.yml and rules copied from deploy/ (or from `up(alerts=...)`), plus file_sd
                     targets for these ports; Prometheus re-reads the rules on SIGHUP
  config/jaeger/     the Jaeger UI config from deploy/jaeger, its links moved to these ports

The configuration files are the repository's own (otel-collector/config.yaml, deploy/*), the same files
docker-compose mounts; every address in them is an environment variable set here.

Each `up` (started, already running, or failed) and each `down` of a recorded stack is an audit record
(`stack.start`, `stack.stop`: who, the stack directory, the servers' pids and the ports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clawdbot_otel import audit
from clawdbot_otel.logfiles import LogStoreClass, endpoint_env, log_store_classes

from ._build import Binaries, StackError, cache_dir, find_binaries, repo_root
from ._jaeger_ui import installed_jaeger_ui

__all__ = [
    "PORT_OFFSET_ENV",
    "STACK_DIR_ENV",
    "AlertConfig",
    "Ports",
    "ServerStatus",
    "StackInfo",
    "check_ports_free",
    "collector_env",
    "down",
    "info",
    "stack_dir",
    "start_server",
    "status",
    "stop_server",
    "up",
]

PORT_OFFSET_ENV = "CLAWDBOT_OTEL_PORT_OFFSET"
STACK_DIR_ENV = "CLAWDBOT_OTEL_STACK_DIR"
_PORT_ENV_PREFIX = "CLAWDBOT_OTEL_PORT_"
_STATE = "state.json"
# Where deploy/prometheus/prometheus.yml sends the aggregated series (the compose service name).
LONG_TERM_WRITE_URL = "http://prometheus-longterm:9090/api/v1/write"
# Servers started by this process: kept referenced (so Popen never warns "still running" when collected)
# and reaped by down().
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
class ServerStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    data_dir: str | None = None
    log: str | None = None


@dataclasses.dataclass(frozen=True)
class _Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    ports: dict[str, int]  # Ports field -> port, for the "port taken" message
    data_dir: Path | None = None


def stack_dir(path: Path | None = None) -> Path:
    if path is not None:
        return path.resolve()
    env = os.environ.get(STACK_DIR_ENV)
    return Path(env).expanduser().resolve() if env else cache_dir() / "stack"


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


def _victorialogs_servers(binaries: Binaries, data: Path, ports: Ports, base: Mapping[str, str]) -> list[_Server]:
    """One storage instance per retention class (its own -retentionPeriod), one query node over them."""
    loopback = "127.0.0.1"
    servers = []
    for cls in log_store_classes():
        port = ports.victorialogs_storage_port(cls)
        servers.append(_Server(
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
    servers.append(_Server(
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
) -> list[_Server]:
    """The collector on the usual ports; with `samplers` > 0 it is the first tier (loadbalancer.yaml: traces
    routed by trace id) in front of that many tail-sampling collectors, each on the collector's four ports
    + 10 x its number (docs/scaling.md)."""
    config = repo / "otel-collector"

    def collector(name: str, files: list[str], shift: int, env: Mapping[str, str]) -> _Server:
        own = {"otlp_grpc": ports.otlp_grpc + shift, "otlp_http": ports.otlp_http + shift,
               "collector_health": ports.collector_health + shift, "collector_metrics": ports.collector_metrics + shift}
        return _Server(
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


def _servers(binaries: Binaries, repo: Path, root: Path, ports: Ports, extra_env: Mapping[str, str],
             *, alerts: AlertConfig, samplers: int = 0) -> list[_Server]:
    data = root / "data"
    base = dict(os.environ)
    collectors = _collector_servers(binaries, repo, data, ports, base=base, extra_env=extra_env, samplers=samplers)
    prom_config = _write_prometheus_config(repo, root / "config" / "prometheus", ports,
                                           [c.ports["collector_metrics"] for c in collectors], alerts.rules_dir)
    alertmanager_config = alerts.alertmanager_config or repo / "deploy" / "alertmanager" / "alertmanager.yml"
    loopback = "127.0.0.1"
    return [
        *_victorialogs_servers(binaries, data, ports, base),
        _Server(
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
        _Server(
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
        _Server(
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
        _Server(
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


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_ours(pid: int, argv0: str) -> bool:
    """The pid is alive and still runs the binary we started (guards against pid reuse)."""
    cmd = _cmdline(pid)
    if not cmd:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return cmd[0] == argv0


def _http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(300).decode(errors="replace").strip()
            return 200 <= resp.status < 300, f"HTTP {resp.status} {body[:80]}"
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode(errors="replace").strip()
        return False, f"HTTP {exc.code} {body[:120]}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line[:400] for line in text[-lines:])


def _read_state(root: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((root / _STATE).read_text())
    except (OSError, ValueError):
        return None
    return data


def _terminate(pids: Mapping[str, tuple[int, str]], timeout: float = 15.0) -> list[str]:
    """SIGTERM the (pid, argv0) pairs that are still ours, SIGKILL after `timeout`; names stopped."""
    live = {name: pid for name, (pid, argv0) in pids.items() if _is_ours(pid, argv0)}
    for pid in live.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    remaining = dict(live)
    while remaining and time.monotonic() < deadline:
        for name, pid in list(remaining.items()):
            child = _CHILDREN.get(pid)
            if child is not None and child.poll() is not None:  # our child: reap it
                del _CHILDREN[pid]
            if not _is_ours(pid, pids[name][1]):
                del remaining[name]
        time.sleep(0.1)
    for pid in remaining.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
    return sorted(live)


def _start(server: _Server, logs: Path) -> subprocess.Popen[bytes]:
    log = (logs / f"{server.name}.log").open("wb")
    try:
        return subprocess.Popen(
            server.argv,
            env=server.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI that started it; not killed by its Ctrl-C
            cwd=logs.parent,
        )
    finally:
        log.close()


def _actor() -> str:
    """Who acted, for the audit record: the OS user running the launcher."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (3.11 raises KeyError, 3.13 OSError)
        return f"uid:{os.getuid()}"


def _audit_stack(
    action: str, root: Path, ports: Ports | Mapping[str, int] | None, pids: Mapping[str, int], **fields: Any
) -> None:
    port_map = dataclasses.asdict(ports) if isinstance(ports, Ports) else dict(ports or {})
    audit(action, actor=_actor(), metadata={"stack_dir": str(root), "servers": dict(pids), "ports": port_map},
          **fields)


def up(
    *,
    root: Path | None = None,
    ports: Ports | None = None,
    binaries: Binaries | None = None,
    collector_extra_env: Mapping[str, str] | None = None,
    alerts: AlertConfig | None = None,
    samplers: int = 0,
    timeout: float = 120.0,
    progress: Progress = _stderr,
) -> StackInfo:
    """Start every server, wait until all are ready, record them in state.json.

    `alerts` replaces the alert rules and routing the servers load (default: deploy/'s); tests use it for
    fire-drill copies (`clawdbot_otel.presentation.write_drill_config`).

    Idempotent: if this stack directory's servers are all running and healthy, returns them. On any failure
    the servers started here are stopped again and StackError says why (with the log tail). The outcome is
    audited (`stack.start`, success or failure). `samplers` > 0: two tiers of collectors (docs/scaling.md).
    """
    root = stack_dir(root)
    try:
        ports = ports or Ports.from_env()
        if samplers < 0:
            raise StackError(f"--samplers {samplers}: give 0 (one collector) or more tail-sampling collectors")
        stack, started = _up(root, ports=ports, binaries=binaries, collector_extra_env=collector_extra_env or {},
                             alerts=alerts or AlertConfig(), samplers=samplers, timeout=timeout, progress=progress)
    except BaseException as exc:
        reason = str(exc).partition("\n")[0] or type(exc).__name__  # the first line: no log tail
        _audit_stack("stack.start", root, ports, {}, outcome="failure", error=type(exc).__name__, reason=reason)
        raise
    _audit_stack("stack.start", root, stack.ports, stack.pids, already_running=not started)
    return stack


def _up(
    root: Path,
    *,
    ports: Ports,
    binaries: Binaries | None,
    collector_extra_env: Mapping[str, str],
    alerts: AlertConfig,
    samplers: int,
    timeout: float,
    progress: Progress,
) -> tuple[StackInfo, bool]:
    """`up` without the audit: the stack, and False if it was already running."""
    state = _read_state(root)
    if state:
        current = status(root)
        alive = [s for s in current if s.running]
        if alive and all(s.running and s.healthy for s in current):
            progress(f"stack already running ({root})")
            return StackInfo(root, Ports(**state["ports"]), {s.name: s.pid or 0 for s in current}), False
        if alive:
            raise StackError(
                f"the stack in {root} is partly running ({', '.join(s.name for s in alive)}): "
                "run `clawdbot-otel stack down` first"
            )
        (root / _STATE).unlink(missing_ok=True)
    binaries = binaries or find_binaries()
    repo = repo_root()
    for sub in ("data/victorialogs", "data/prometheus", "data/prometheus-longterm", "data/alertmanager",
                "data/otel-collector", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    servers = _servers(binaries, repo, root, ports, collector_extra_env, alerts=alerts, samplers=samplers)
    check_ports_free({s.name: s.ports for s in servers})

    started = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    record: dict[str, tuple[int, str]] = {}
    try:
        for server in servers:
            procs[server.name] = _start(server, root / "logs")
            record[server.name] = (procs[server.name].pid, server.argv[0])
        _write_state(root, ports, servers, procs, collector_extra_env, alerts=alerts, samplers=samplers)
        progress(f"stack up: started {len(procs)} servers, waiting until ready…")
        pending = {s.name: s for s in servers}
        last: dict[str, str] = {}
        while pending:
            for name, server in list(pending.items()):
                code = procs[name].poll()
                if code is not None:
                    raise StackError(
                        f"{name} exited with code {code} while starting; log {root / 'logs' / (name + '.log')}:\n"
                        + _tail(root / "logs" / f"{name}.log")
                    )
                ok, detail = _http_ok(server.ready_url, timeout=1.0)
                last[name] = detail
                if ok:
                    progress(f"  {name}: ready after {time.monotonic() - started:.1f}s")
                    del pending[name]
            if pending and time.monotonic() - started > timeout:
                name = next(iter(pending))
                raise StackError(
                    f"{', '.join(pending)} not ready after {timeout:.0f}s ({name}: {pending[name].ready_url} -> "
                    f"{last.get(name)}); log {root / 'logs' / (name + '.log')}:\n"
                    + _tail(root / "logs" / f"{name}.log")
                )
            if pending:
                time.sleep(0.2)
    except BaseException:
        _terminate(record)
        for proc in procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        (root / _STATE).unlink(missing_ok=True)
        raise
    _CHILDREN.update({p.pid: p for p in procs.values()})
    progress(f"stack up: all {len(servers)} servers ready in {time.monotonic() - started:.1f}s")
    return StackInfo(root, ports, {name: p.pid for name, p in procs.items()}), True


def _write_state(
    root: Path,
    ports: Ports,
    servers: list[_Server],
    procs: Mapping[str, subprocess.Popen[bytes]],
    collector_extra_env: Mapping[str, str],
    *,
    alerts: AlertConfig,
    samplers: int,
) -> None:
    state = {
        "started_at": time.time(),
        "ports": dataclasses.asdict(ports),
        # What `stack start NAME` needs to rebuild a server's command line (the sampling knobs, the alert files).
        "collector_extra_env": dict(collector_extra_env),
        "alerts": alerts.to_state(),
        "samplers": samplers,
        "servers": {
            s.name: {
                "pid": procs[s.name].pid,
                "argv": s.argv,
                "ready_url": s.ready_url,
                "log": str(root / "logs" / f"{s.name}.log"),
                "ports": s.ports,
                "data_dir": str(s.data_dir) if s.data_dir else None,
            }
            for s in servers
        },
    }
    _save_state(root, state)


def _save_state(root: Path, state: Mapping[str, Any]) -> None:
    tmp = root / (_STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, root / _STATE)


def status(root: Path | None = None) -> list[ServerStatus]:
    """Per server: is the recorded pid still ours, and does its readiness endpoint answer?"""
    root = stack_dir(root)
    state = _read_state(root)
    if not state:
        return []
    result = []
    for name, info in state.get("servers", {}).items():
        pid = int(info["pid"]) if info.get("pid") else None
        running = pid is not None and _is_ours(pid, info["argv"][0])
        healthy, detail = _http_ok(info["ready_url"]) if running else (False, info.get("stopped", "not running"))
        result.append(ServerStatus(name, pid, running, healthy, detail if not healthy else info["ready_url"],
                                   dict(info.get("ports") or {}), info.get("data_dir"), info.get("log")))
    return result


def info(root: Path | None = None) -> StackInfo | None:
    root = stack_dir(root)
    state = _read_state(root)
    if not state:
        return None
    return StackInfo(root, Ports(**state["ports"]),
                     {n: int(s["pid"]) for n, s in state["servers"].items() if s.get("pid")})


def down(root: Path | None = None, progress: Progress = _stderr) -> list[str]:
    """Stop the servers recorded in state.json (only those pids, and only if they still run our binary).

    Audited (`stack.stop`) when a stack was recorded.
    """
    root = stack_dir(root)
    state = _read_state(root)
    if not state:
        progress(f"stack down: nothing recorded in {root}")
        return []
    pids = {name: (int(s["pid"]), str(s["argv"][0])) for name, s in state.get("servers", {}).items()
            if s.get("pid")}
    stopped = _terminate(pids)
    (root / _STATE).unlink(missing_ok=True)
    progress(f"stack down: stopped {', '.join(stopped) if stopped else 'nothing (no server was running)'}")
    _audit_stack("stack.stop", root, state.get("ports"), {name: pid for name, (pid, _argv0) in pids.items()},
                 stopped=stopped)
    return stopped


def stop_server(name: str, root: Path | None = None, progress: Progress = _stderr) -> bool:
    """Stop one server of the recorded stack (what an operator does for an upgrade); the others keep
    running and `start_server(name)` brings it back with the same ports and data. True if it was running."""
    root = stack_dir(root)
    state = _recorded(root, name)
    server = state["servers"][name]
    pid = server.get("pid")
    stopped = _terminate({name: (int(pid), str(server["argv"][0]))}) if pid else []
    server["pid"] = None
    server["stopped"] = f"stopped by `stack stop {name}` at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    _save_state(root, state)
    progress(f"stack stop: {name} {'stopped' if stopped else 'was not running'}")
    _audit_stack("stack.stop", root, state.get("ports"), {name: int(pid or 0)}, stopped=stopped)
    return bool(stopped)


def start_server(
    name: str, root: Path | None = None, *, binaries: Binaries | None = None, timeout: float = 120.0,
    progress: Progress = _stderr,
) -> int:
    """Start one stopped server of the recorded stack again, as `up` started it; waits until it is ready
    and returns its pid. StackError if it is already running or does not become ready."""
    root = stack_dir(root)
    state = _recorded(root, name)
    recorded = state["servers"][name]
    if recorded.get("pid") and _is_ours(int(recorded["pid"]), recorded["argv"][0]):
        raise StackError(f"{name} is already running (pid {recorded['pid']}): `clawdbot-otel stack stop {name}` first")
    ports = Ports(**state["ports"])
    servers = _servers(binaries or find_binaries(), repo_root(), root, ports, state.get("collector_extra_env", {}),
                       alerts=AlertConfig.from_state(state.get("alerts")), samplers=state.get("samplers", 0))
    server = next(s for s in servers if s.name == name)
    check_ports_free({server.name: server.ports})
    proc = _start(server, root / "logs")
    started = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            raise StackError(f"{name} exited with code {code} while starting; log {root / 'logs' / (name + '.log')}:\n"
                             + _tail(root / "logs" / f"{name}.log"))
        ok, detail = _http_ok(server.ready_url, timeout=1.0)
        if ok:
            break
        if time.monotonic() - started > timeout:
            _terminate({name: (proc.pid, server.argv[0])})
            raise StackError(f"{name} not ready after {timeout:.0f}s ({server.ready_url} -> {detail})")
        time.sleep(0.2)
    _CHILDREN[proc.pid] = proc
    state = _read_state(root) or state  # another start/stop may have written meanwhile
    state["servers"][name].update(pid=proc.pid, argv=server.argv)
    state["servers"][name].pop("stopped", None)
    _save_state(root, state)
    progress(f"stack start: {name} ready after {time.monotonic() - started:.1f}s (pid {proc.pid})")
    _audit_stack("stack.start", root, state.get("ports"), {name: proc.pid}, server=name)
    return proc.pid


def _recorded(root: Path, name: str) -> dict[str, Any]:
    state = _read_state(root)
    if not state:
        raise StackError(f"no stack recorded in {root}: `clawdbot-otel stack up` starts one")
    if name not in state.get("servers", {}):
        raise StackError(f"no server {name!r} in the stack; its servers are: {', '.join(state['servers'])}")
    return state

"""Start, check and stop the native stack: five server processes on 127.0.0.1.

State lives in one directory (default <cache>/stack, or $CLAWDBOT_OTEL_STACK_DIR):
  state.json         pids, binaries and ports of the servers this launcher started
  data/<server>/     Prometheus TSDB, Loki chunks/index/compactor, Alertmanager silences
  logs/<server>.log  stdout+stderr of each server (truncated by each `up`)
  config/prometheus/ prometheus.yml and rules copied from deploy/, plus file_sd targets for these ports

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
import shutil
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

from ._build import Binaries, StackError, cache_dir, find_binaries, repo_root

__all__ = [
    "PORT_OFFSET_ENV",
    "STACK_DIR_ENV",
    "Ports",
    "ServerStatus",
    "StackInfo",
    "check_ports_free",
    "collector_env",
    "down",
    "info",
    "stack_dir",
    "status",
    "up",
]

PORT_OFFSET_ENV = "CLAWDBOT_OTEL_PORT_OFFSET"
STACK_DIR_ENV = "CLAWDBOT_OTEL_STACK_DIR"
_PORT_ENV_PREFIX = "CLAWDBOT_OTEL_PORT_"
_STATE = "state.json"
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
    prometheus: int = 9090
    loki_http: int = 3100
    loki_grpc: int = 9095
    alertmanager: int = 9093

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
    def loki_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.loki_http}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager}"

    def urls(self) -> dict[str, str]:
        return {
            "OTLP gRPC (collector)": self.otlp_grpc_endpoint,
            "OTLP HTTP (collector)": self.otlp_http_endpoint,
            "Jaeger UI": self.jaeger_url,
            "Prometheus": self.prometheus_url,
            "Loki": self.loki_url,
            "Alertmanager": self.alertmanager_url,
        }


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class _Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    ports: dict[str, int]  # Ports field -> port, for the "port taken" message


def stack_dir(path: Path | None = None) -> Path:
    if path is not None:
        return path.resolve()
    env = os.environ.get(STACK_DIR_ENV)
    return Path(env).expanduser().resolve() if env else cache_dir() / "stack"


# ------------------------------------------------------------------------------------ server commands


def _write_prometheus_config(repo: Path, conf_dir: Path, ports: Ports) -> Path:
    """Copy deploy/prometheus (config + rules) and write file_sd targets for this port set."""
    src = repo / "deploy" / "prometheus"
    if conf_dir.exists():
        shutil.rmtree(conf_dir)
    (conf_dir / "targets").mkdir(parents=True)
    shutil.copy2(src / "prometheus.yml", conf_dir / "prometheus.yml")
    if (src / "rules").is_dir():
        shutil.copytree(src / "rules", conf_dir / "rules")
    targets = {
        "prometheus": ports.prometheus,
        "otel-collector": ports.collector_metrics,
        "jaeger": ports.jaeger_metrics,
        "loki": ports.loki_http,
        "alertmanager": ports.alertmanager,
    }
    for job, port in targets.items():
        (conf_dir / "targets" / f"{job}.yml").write_text(
            f"# written by `clawdbot-otel stack up`\n- targets: ['127.0.0.1:{port}']\n"
        )
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
        "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{ports.loki_http}/otlp",
    }


def _servers(binaries: Binaries, repo: Path, root: Path, ports: Ports, extra_env: Mapping[str, str]) -> list[_Server]:
    data = root / "data"
    base = dict(os.environ)
    prom_config = _write_prometheus_config(repo, root / "config" / "prometheus", ports)
    loopback = "127.0.0.1"
    return [
        _Server(
            "loki",
            [str(binaries.loki), f"-config.file={repo / 'deploy' / 'loki' / 'config.yaml'}", "-config.expand-env=true"],
            {
                **base,
                "LOKI_HTTP_ADDRESS": loopback,
                "LOKI_HTTP_PORT": str(ports.loki_http),
                "LOKI_GRPC_ADDRESS": loopback,
                "LOKI_GRPC_PORT": str(ports.loki_grpc),
                "LOKI_DATA_DIR": str(data / "loki"),
                "LOKI_ALERTMANAGER_URL": f"http://{loopback}:{ports.alertmanager}",
                "LOKI_RUNTIME_CONFIG": str(repo / "deploy" / "loki" / "retention.yaml"),
            },
            f"http://{loopback}:{ports.loki_http}/ready",
            {"loki_http": ports.loki_http, "loki_grpc": ports.loki_grpc},
        ),
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
            ],
            base,
            f"http://{loopback}:{ports.prometheus}/-/ready",
            {"prometheus": ports.prometheus},
        ),
        _Server(
            "alertmanager",
            [
                str(binaries.alertmanager),
                f"--config.file={repo / 'deploy' / 'alertmanager' / 'alertmanager.yml'}",
                f"--storage.path={data / 'alertmanager'}",
                f"--web.listen-address={loopback}:{ports.alertmanager}",
                "--cluster.listen-address=",  # no clustering: no gossip port (default 9094)
            ],
            base,
            f"http://{loopback}:{ports.alertmanager}/-/ready",
            {"alertmanager": ports.alertmanager},
        ),
        _Server(
            "otel-collector",
            [str(binaries.collector), "--config", str(repo / "otel-collector" / "config.yaml")],
            {**base, **collector_env(ports), **extra_env},
            f"http://{loopback}:{ports.collector_health}/",
            {
                "otlp_grpc": ports.otlp_grpc,
                "otlp_http": ports.otlp_http,
                "collector_health": ports.collector_health,
                "collector_metrics": ports.collector_metrics,
            },
        ),
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
    timeout: float = 120.0,
    progress: Progress = _stderr,
) -> StackInfo:
    """Start every server, wait until all are ready, record them in state.json.

    Idempotent: if this stack directory's servers are all running and healthy, returns them. On any failure
    the servers started here are stopped again and StackError says why (with the log tail). The outcome is
    audited (`stack.start`, success or failure).
    """
    root = stack_dir(root)
    try:
        ports = ports or Ports.from_env()
        stack, started = _up(root, ports=ports, binaries=binaries, collector_extra_env=collector_extra_env or {},
                             timeout=timeout, progress=progress)
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
    for sub in ("data/loki", "data/prometheus", "data/alertmanager", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    servers = _servers(binaries, repo, root, ports, collector_extra_env)
    check_ports_free({s.name: s.ports for s in servers})

    started = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    record: dict[str, tuple[int, str]] = {}
    try:
        for server in servers:
            procs[server.name] = _start(server, root / "logs")
            record[server.name] = (procs[server.name].pid, server.argv[0])
        _write_state(root, ports, servers, procs)
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
    root: Path, ports: Ports, servers: list[_Server], procs: Mapping[str, subprocess.Popen[bytes]]
) -> None:
    state = {
        "started_at": time.time(),
        "ports": dataclasses.asdict(ports),
        "servers": {
            s.name: {
                "pid": procs[s.name].pid,
                "argv": s.argv,
                "ready_url": s.ready_url,
                "log": str(root / "logs" / f"{s.name}.log"),
            }
            for s in servers
        },
    }
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
        pid = int(info["pid"])
        running = _is_ours(pid, info["argv"][0])
        healthy, detail = _http_ok(info["ready_url"]) if running else (False, "not running")
        result.append(ServerStatus(name, pid, running, healthy, detail if not healthy else info["ready_url"]))
    return result


def info(root: Path | None = None) -> StackInfo | None:
    root = stack_dir(root)
    state = _read_state(root)
    if not state:
        return None
    return StackInfo(root, Ports(**state["ports"]), {n: int(s["pid"]) for n, s in state["servers"].items()})


def down(root: Path | None = None, progress: Progress = _stderr) -> list[str]:
    """Stop the servers recorded in state.json (only those pids, and only if they still run our binary).

    Audited (`stack.stop`) when a stack was recorded.
    """
    root = stack_dir(root)
    state = _read_state(root)
    if not state:
        progress(f"stack down: nothing recorded in {root}")
        return []
    pids = {name: (int(s["pid"]), str(s["argv"][0])) for name, s in state.get("servers", {}).items()}
    stopped = _terminate(pids)
    (root / _STATE).unlink(missing_ok=True)
    progress(f"stack down: stopped {', '.join(stopped) if stopped else 'nothing (no server was running)'}")
    _audit_stack("stack.stop", root, state.get("ports"), {name: pid for name, (pid, _argv0) in pids.items()},
                 stopped=stopped)
    return stopped

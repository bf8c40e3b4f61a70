"""Start, check and stop the native stack: its server processes on 127.0.0.1 (what each one is: `_servers`).

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
import getpass
import json
import os
import signal
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
from ._servers import (
    AlertConfig,
    Ports,
    ServerSpec,
    StackInfo,
    check_ports_free,
    server_specs,
)

__all__ = [
    "STACK_DIR_ENV",
    "ServerStatus",
    "down",
    "info",
    "stack_dir",
    "start_server",
    "status",
    "stop_server",
    "up",
]

STACK_DIR_ENV = "CLAWDBOT_OTEL_STACK_DIR"
_STATE = "state.json"
# Servers started by this process: kept referenced (so Popen never warns "still running" when collected)
# and reaped by down().
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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


def stack_dir(path: Path | None = None) -> Path:
    if path is not None:
        return path.resolve()
    env = os.environ.get(STACK_DIR_ENV)
    return Path(env).expanduser().resolve() if env else cache_dir() / "stack"


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
    # Reap our children that exited on their own or between two checks above (a SIGKILLed server is a
    # zombie until then, and its Popen would warn "still running" at exit).
    for pid, _argv0 in pids.values():
        child = _CHILDREN.get(pid)
        if child is not None and child.poll() is not None:
            del _CHILDREN[pid]
    return sorted(live)


def _start(server: ServerSpec, logs: Path) -> subprocess.Popen[bytes]:
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
    servers = server_specs(binaries, repo, root, ports, collector_extra_env, alerts=alerts, samplers=samplers)
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
    servers: list[ServerSpec],
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
    servers = server_specs(binaries or find_binaries(), repo_root(), root, ports, state.get("collector_extra_env", {}),
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

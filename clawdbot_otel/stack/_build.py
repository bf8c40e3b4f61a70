"""Build (or find) the five servers of the native stack, cached under ~/.cache/clawdbot-otel.

* otelcol-clawdbot: the OpenTelemetry Collector Builder (ocb) with otel-collector/builder-config.yaml;
* jaeger (v2) and victoria-logs: `go build` of their cmd packages through a generated wrapper module that requires
  the pinned release and repeats its replace/exclude directives (`go install pkg@version` refuses modules
  with replace directives);
* prometheus and alertmanager: the Debian packages (installed with apt-get when run as root);
* the Jaeger UI's static files (_jaeger_ui.py says from where);
* telemetrygen, collector-contrib's load generator (not a server: bench/capacity_bench.py drives the stack
  with it), through the same wrapper module as Jaeger and VictoriaLogs.

Every built binary lands in <cache>/bin/<name>-<version> next to a `.stamp` file holding a hash of its
recipe (pinned version, manifest or wrapper go.mod, flags), so a second build is a no-op. Go's own module
and build caches (GOMODCACHE, GOCACHE) are used as they are, which keeps rebuilds after a recipe change
incremental.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clawdbot_otel.paths import cache_dir

from . import _versions as v
from ._errors import StackError
from ._jaeger_ui import install_jaeger_ui

__all__ = [
    "Binaries",
    "StackError",
    "build_all",
    "cache_dir",
    "find_binaries",
    "find_telemetrygen",
    "repo_root",
]

Progress = Callable[[str], None]
_TOTAL_STEPS = 7


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Absolute paths of the five server executables."""

    collector: Path
    jaeger: Path
    victorialogs: Path
    prometheus: Path
    alertmanager: Path


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def repo_root() -> Path:
    """The checkout holding otel-collector/ and deploy/ ($CLAWDBOT_OTEL_REPO overrides the search)."""
    env = os.environ.get("CLAWDBOT_OTEL_REPO")
    candidates = [Path(env).expanduser()] if env else list(Path(__file__).resolve().parents)
    for cand in candidates:
        if (cand / "otel-collector" / "builder-config.yaml").is_file() and (cand / "deploy").is_dir():
            return cand.resolve()
    raise StackError(
        "cannot find the clawdbot-otel checkout (otel-collector/builder-config.yaml and deploy/): "
        "run from an editable install of the repository or set CLAWDBOT_OTEL_REPO=/path/to/checkout"
    )


# --------------------------------------------------------------------------------------------- helpers


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _is_fresh(binary: Path, recipe: str) -> bool:
    stamp = binary.with_name(binary.name + ".stamp")
    try:
        return binary.is_file() and os.access(binary, os.X_OK) and stamp.read_text().strip() == recipe
    except OSError:
        return False


def _install(built: Path, binary: Path, recipe: str) -> None:
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(binary.name + ".tmp")
    shutil.copy2(built, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, binary)
    binary.with_name(binary.name + ".stamp").write_text(recipe + "\n")


@contextlib.contextmanager
def _build_lock(cache: Path) -> Iterator[None]:
    """One `stack build` at a time per cache (a concurrent one waits instead of racing)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _stderr("another `clawdbot-otel stack build` is running on this cache; waiting for it…")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def _run(cmd: Sequence[str], *, cwd: Path, log: Path, env: Mapping[str, str], what: str) -> None:
    """Run a build command, appending its output to `log`; raise StackError with the log tail on failure."""
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(list(cmd), cwd=cwd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise StackError(f"{what} failed (exit {proc.returncode}); full log: {log}\n{_tail(log)}")


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return ()
    return tuple(int(g or 0) for g in m.groups())


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def _go() -> tuple[str, dict[str, str]]:
    """Path of a usable `go` and the environment to run it with."""
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None
    )
    if go is None:
        raise StackError(
            f"go not found: install Go >= {_fmt(v.GO_MIN_VERSION)} (https://go.dev/dl/) and put it on PATH"
        )
    env = dict(os.environ)
    # Fail clearly on an old toolchain instead of silently downloading another one.
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod"
    env["PATH"] = str(Path(go).parent) + os.pathsep + env.get("PATH", "")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, env=env, check=False)
    have = _version_tuple(out.stdout)
    if not have or have < v.GO_MIN_VERSION:
        raise StackError(
            f"{go} is {out.stdout.strip() or 'unknown'}: install Go >= {_fmt(v.GO_MIN_VERSION)} "
            "(the pinned collector, Jaeger and VictoriaLogs modules require it)"
        )
    return go, env


# ------------------------------------------------------------------------------------------- collector


def _collector(cache: Path, force: bool, step: str, progress: Progress) -> Path:
    binary = cache / "bin" / f"otelcol-clawdbot-v{v.COLLECTOR_VERSION}"
    manifest_src = repo_root() / "otel-collector" / "builder-config.yaml"
    manifest: dict[str, Any] = yaml.safe_load(manifest_src.read_text())
    recipe = _sha("collector", v.COLLECTOR_VERSION, json.dumps(manifest, sort_keys=True))
    label = f"{step} otel-collector v{v.COLLECTOR_VERSION}"
    if not force and _is_fresh(binary, recipe):
        progress(f"{label}: cached ({binary})")
        return binary
    go, env = _go()
    build = cache / "build" / f"collector-v{v.COLLECTOR_VERSION}"
    build.mkdir(parents=True, exist_ok=True)
    log = build / "build.log"
    log.write_text("")
    builder = cache / "tools" / f"builder-v{v.COLLECTOR_VERSION}" / "builder"
    if not os.access(builder, os.X_OK):
        progress(f"{label}: installing the collector builder (ocb) v{v.COLLECTOR_VERSION}…")
        _run(
            [go, "install", f"{v.BUILDER_MODULE}@v{v.COLLECTOR_VERSION}"],
            cwd=build,
            log=log,
            env={**env, "GOBIN": str(builder.parent)},
            what="installing the collector builder",
        )
    progress(f"{label}: building (first build takes several minutes)…")
    started = time.monotonic()
    manifest.setdefault("dist", {})["output_path"] = str(build / "src")
    (build / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    _run([str(builder), "--config", "manifest.yaml"], cwd=build, log=log, env=env, what="collector build")
    name = str(manifest["dist"].get("name", "otelcol-clawdbot"))
    _install(build / "src" / name, binary, recipe)
    progress(f"{label}: built in {time.monotonic() - started:.0f}s ({binary})")
    return binary


# --------------------------------------------------------------------------------- Go wrapper modules


def _wrapper_gomod(
    go: str, env: Mapping[str, str], *, name: str, module: str, version: str, build: Path, log: Path
) -> tuple[str, Path]:
    """A go.mod requiring `module@version` with its replace/exclude directives repeated.

    Replaces that point at a local directory cannot be repeated (the module zip does not contain nested
    modules); such modules fall back to the version upstream's go.mod requires, fetched from the proxy.
    Returns the go.mod text and the path of upstream's go.sum (reused so that checksums come from the
    project itself: the checksum database reachable here answers 404 for some dependencies).
    """
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        cwd=build,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        log.write_text(out.stdout + out.stderr)
        raise StackError(f"cannot download {module}@{version} from the Go module proxy:\n{_tail(log)}")
    info = json.loads(out.stdout)
    upstream_dir = Path(info["Dir"])
    parsed = json.loads(
        subprocess.run(
            [go, "mod", "edit", "-json", info["GoMod"]], env=dict(env), capture_output=True, text=True, check=True
        ).stdout
    )
    go_line = parsed.get("Go") or "1.24"
    requires = {r["Path"]: r["Version"] for r in parsed.get("Require") or []}
    lines = [
        "// Generated by `clawdbot-otel stack build`: builds a command of the module below with the",
        "// replace/exclude directives of its own go.mod.",
        f"module clawdbot-otel.local/build/{name}",
        "",
        f"go {go_line}",
        "",
        f"require {module} {version}",
    ]
    for rep in parsed.get("Replace") or []:
        old, new = rep["Old"], rep["New"]
        old_s = old["Path"] + (f" {old['Version']}" if old.get("Version") else "")
        if not new.get("Version"):  # local directory replace: use the required version instead
            if old["Path"] in requires:
                lines.append(f"require {old['Path']} {requires[old['Path']]} // upstream: => {new['Path']}")
            continue
        lines.append(f"replace {old_s} => {new['Path']} {new['Version']}")
    for exc in parsed.get("Exclude") or []:
        lines.append(f"exclude {exc['Path']} {exc['Version']}")
    return "\n".join(lines) + "\n", upstream_dir / "go.sum"


def _go_wrapper_build(
    *,
    cache: Path,
    force: bool,
    step: str,
    progress: Progress,
    name: str,
    module: str,
    version: str,
    package: str,
    flags: Sequence[str],
) -> Path:
    binary = cache / "bin" / f"{name}-{version}"
    build = cache / "build" / f"{name}-{version}"
    label = f"{step} {name} {version}"
    # The recipe is known without touching the network only through the stamp of a previous build.
    recipe_hint = _sha(name, module, version, package, *flags)
    if not force and _is_fresh(binary, recipe_hint):
        progress(f"{label}: cached ({binary})")
        return binary
    go, env = _go()
    build.mkdir(parents=True, exist_ok=True)
    log = build / "build.log"
    log.write_text("")
    progress(f"{label}: building (first build takes several minutes)…")
    started = time.monotonic()
    gomod, upstream_sum = _wrapper_gomod(go, env, name=name, module=module, version=version, build=build, log=log)
    (build / "go.mod").write_text(gomod)
    gosum = build / "go.sum"
    if upstream_sum.is_file():
        existing = gosum.read_text() if gosum.is_file() else ""
        merged = sorted(set(existing.splitlines()) | set(upstream_sum.read_text().splitlines()))
        gosum.write_text("\n".join(line for line in merged if line) + "\n")
    _run([go, "get", f"{package}@{version}"], cwd=build, log=log, env=env, what=f"{name}: go get")
    out = build / name
    _run([go, "build", *flags, "-o", str(out), package], cwd=build, log=log, env=env, what=f"{name}: go build")
    _install(out, binary, recipe_hint)
    progress(f"{label}: built in {time.monotonic() - started:.0f}s ({binary})")
    return binary


def _jaeger(cache: Path, force: bool, step: str, progress: Progress) -> Path:
    pkg = "github.com/jaegertracing/jaeger/internal/version"
    ldflags = f"-s -w -X {pkg}.latestVersion=v{v.JAEGER_VERSION}"
    return _go_wrapper_build(
        cache=cache,
        force=force,
        step=step,
        progress=progress,
        name="jaeger",
        module=v.JAEGER_MODULE,
        version=v.JAEGER_MODULE_VERSION,
        package=f"{v.JAEGER_MODULE}/cmd/jaeger",
        flags=["-trimpath", "-ldflags", ldflags],
    )


def _victorialogs(cache: Path, force: bool, step: str, progress: Progress) -> Path:
    pkg = "github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo"
    ldflags = f"-s -w -X {pkg}.Version=victoria-logs-{v.VICTORIALOGS_VERSION}"
    return _go_wrapper_build(
        cache=cache,
        force=force,
        step=step,
        progress=progress,
        name="victoria-logs",
        module=v.VICTORIALOGS_MODULE,
        version=v.VICTORIALOGS_VERSION,
        package=f"{v.VICTORIALOGS_MODULE}/app/victoria-logs",
        flags=["-trimpath", "-ldflags", ldflags],
    )


def _telemetrygen_binary(cache: Path) -> Path:
    return cache / "bin" / f"telemetrygen-{v.TELEMETRYGEN_VERSION}"


def _telemetrygen(cache: Path, force: bool, step: str, progress: Progress) -> Path:
    return _go_wrapper_build(
        cache=cache,
        force=force,
        step=step,
        progress=progress,
        name="telemetrygen",
        module=v.TELEMETRYGEN_MODULE,
        version=v.TELEMETRYGEN_VERSION,
        package=v.TELEMETRYGEN_MODULE,
        flags=["-trimpath", "-ldflags", "-s -w"],
    )


# ---------------------------------------------------------------------------------- Debian packages


def _binary_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return _version_tuple(out.stdout + out.stderr)


def _debian(
    *,
    step: str,
    progress: Progress,
    label: str,
    env_var: str,
    names: Sequence[str],
    package: str,
    min_version: tuple[int, ...],
    install: bool,
) -> Path:
    found = os.environ.get(env_var) or next((p for n in names if (p := shutil.which(n))), None)
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        progress(f"{step} {label}: installing Debian package {package} (apt-get)…")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install_cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
        proc = subprocess.run(install_cmd, env=apt_env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:  # a new machine has no package lists yet: fetch them once and try again
            progress(f"{step} {label}: apt-get update, then installing {package} again…")
            subprocess.run(["apt-get", "update", "-qq"], env=apt_env, capture_output=True, text=True, check=False)
            proc = subprocess.run(install_cmd, env=apt_env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(
                f"{label} not found and `apt-get install -y {package}` failed, after `apt-get update` too:\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        found = next((p for n in names if (p := shutil.which(n))), None)
    if found is None:
        raise StackError(
            f"{label} not found: install the Debian package `{package}` (apt-get install -y {package}), "
            f"or put a {names[-1]} >= {_fmt(min_version)} on PATH, or set {env_var}=/path/to/binary"
        )
    have = _binary_version(found)
    if have < min_version:
        raise StackError(f"{found} is version {_fmt(have)}; {label} >= {_fmt(min_version)} is needed")
    progress(f"{step} {label} {_fmt(have)}: found ({found})")
    return Path(found)


def _prometheus(step: str, progress: Progress, install: bool) -> Path:
    return _debian(
        step=step,
        progress=progress,
        label="prometheus",
        env_var="CLAWDBOT_OTEL_PROMETHEUS",
        names=["prometheus"],
        package=v.PROMETHEUS_DEB,
        min_version=v.PROMETHEUS_MIN_VERSION,
        install=install,
    )


def _alertmanager(step: str, progress: Progress, install: bool) -> Path:
    return _debian(
        step=step,
        progress=progress,
        label="alertmanager",
        env_var="CLAWDBOT_OTEL_ALERTMANAGER",
        names=["prometheus-alertmanager", "alertmanager"],
        package=v.ALERTMANAGER_DEB,
        min_version=v.ALERTMANAGER_MIN_VERSION,
        install=install,
    )


# -------------------------------------------------------------------------------------------- public


def build_all(
    *,
    cache: Path | None = None,
    force: bool = False,
    install_packages: bool = True,
    jaeger_ui: Path | None = None,
    download_jaeger_ui: bool = False,
    progress: Progress = _stderr,
) -> Binaries:
    """Build or locate every server, and install the Jaeger UI (see _jaeger_ui: `jaeger_ui` is a build folder
    or tarball to install, `download_jaeger_ui` fetches upstream's); cached results are reused (seconds when
    nothing changed)."""
    cache = cache or cache_dir()
    started = time.monotonic()
    with _build_lock(cache):
        collector = _collector(cache, force, f"[1/{_TOTAL_STEPS}]", progress)
        jaeger = _jaeger(cache, force, f"[2/{_TOTAL_STEPS}]", progress)
        victorialogs = _victorialogs(cache, force, f"[3/{_TOTAL_STEPS}]", progress)
        prometheus = _prometheus(f"[4/{_TOTAL_STEPS}]", progress, install_packages)
        alertmanager = _alertmanager(f"[5/{_TOTAL_STEPS}]", progress, install_packages)
        install_jaeger_ui(cache, repo_root(), source=jaeger_ui, download=download_jaeger_ui, force=force,
                          step=f"[6/{_TOTAL_STEPS}]", progress=progress)
        _telemetrygen(cache, force, f"[7/{_TOTAL_STEPS}]", progress)
    progress(f"stack build: done in {time.monotonic() - started:.1f}s (cache: {cache})")
    return Binaries(collector, jaeger, victorialogs, prometheus, alertmanager)


def find_binaries(cache: Path | None = None) -> Binaries:
    """The binaries of a previous `stack build`, without building; StackError names what is missing."""
    cache = cache or cache_dir()
    bin_dir = cache / "bin"
    built = {
        "collector": bin_dir / f"otelcol-clawdbot-v{v.COLLECTOR_VERSION}",
        "jaeger": bin_dir / f"jaeger-{v.JAEGER_MODULE_VERSION}",
        "victorialogs": bin_dir / f"victoria-logs-{v.VICTORIALOGS_VERSION}",
    }
    missing = [f"{k} ({p})" for k, p in built.items() if not os.access(p, os.X_OK)]
    prom = os.environ.get("CLAWDBOT_OTEL_PROMETHEUS") or shutil.which("prometheus")
    am = (
        os.environ.get("CLAWDBOT_OTEL_ALERTMANAGER")
        or shutil.which("prometheus-alertmanager")
        or shutil.which("alertmanager")
    )
    if prom is None:
        missing.append("prometheus (Debian package `prometheus`)")
    if am is None:
        missing.append("alertmanager (Debian package `prometheus-alertmanager`)")
    if missing or prom is None or am is None:
        raise StackError("not built/installed: " + ", ".join(missing) + "; run `clawdbot-otel stack build`")
    return Binaries(built["collector"], built["jaeger"], built["victorialogs"], Path(prom), Path(am))


def find_telemetrygen(cache: Path | None = None) -> Path:
    """The load generator of a previous `stack build`; StackError says how to get it."""
    binary = _telemetrygen_binary(cache or cache_dir())
    if not os.access(binary, os.X_OK):
        raise StackError(f"telemetrygen {v.TELEMETRYGEN_VERSION} not built ({binary}); run `clawdbot-otel stack build`")
    return binary

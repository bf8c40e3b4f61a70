"""Is the upstream gateway alive, and since when: the proxy's own probe connection to it.

Client connections come and go (the `openclaw` CLI connects per command), so liveness cannot come
from them. The monitor keeps one connection of its own, as OpenClaw's probe client
(`client.id: openclaw-probe`, `mode: probe`, no scopes: it receives ticks and health, nothing else):

* with the gateway token, the handshake's `hello-ok` gives the upstream's uptime (`snapshot.uptimeMs`)
  and boot id; the connection stays open and any frame (a `tick` every 30 s) says it is alive;
* without one, every `probe_interval_s` it opens a connection, takes the `connect.challenge` as the
  sign of life and closes again; the uptime is then how long the upstream has been seen alive.

`uptime_s()` is None while the upstream is unreachable or silent for `stale_after_s`: the proxy then
reports no `gateway_uptime_seconds`, and GatewayDown fires, as it would for a dead gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from clawdbot_otel import Telemetry
from clawdbot_otel.frames import PROTOCOL_VERSION

__all__ = ["UpstreamMonitor"]

PROBE_CLIENT_ID = "openclaw-probe"
PROBE_CLIENT_MODE = "probe"


class UpstreamMonitor:
    def __init__(
        self,
        telemetry: Telemetry,
        url: str,
        token: str | None = None,
        *,
        retry_s: float = 5.0,
        probe_interval_s: float = 15.0,
        stale_after_s: float = 90.0,
        open_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.telemetry = telemetry
        self.url = url
        self.token = token
        self.retry_s = retry_s
        self.probe_interval_s = probe_interval_s
        self.stale_after_s = stale_after_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock
        self.boot_id: str | None = None
        self._last_seen: float | None = None
        self._alive_since: float | None = None
        self._uptime_base: tuple[float, float] | None = None  # (upstream uptime s at hello-ok, clock then)
        self._down_reported = False

    # --- what the proxy reads ----------------------------------------------------------------------
    def uptime_s(self) -> float | None:
        """The upstream gateway's uptime now, or None when it is not known to be alive."""
        now = self.clock()
        if self._last_seen is None or now - self._last_seen > self.stale_after_s:
            return None
        if self._uptime_base is not None:
            uptime, at = self._uptime_base
            return uptime + (now - at)
        return now - (self._alive_since if self._alive_since is not None else now)

    @property
    def alive(self) -> bool:
        return self.uptime_s() is not None

    # --- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Probe until cancelled; never raises (a failure is an unreachable upstream, then a retry)."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._unreachable(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.retry_s)

    async def _session(self) -> None:
        async with connect(self.url, open_timeout=self.open_timeout_s, max_size=8 << 20,
                           compression=None) as ws:
            challenge = await self._recv(ws, self.open_timeout_s)
            if challenge.get("type") != "event" or challenge.get("event") != "connect.challenge":
                raise ConnectionError(f"expected connect.challenge, got {str(challenge)[:120]}")
            # Alive from here; with a token, only once the handshake has told the upstream's uptime, so
            # that the probe's own few milliseconds are never reported as the gateway's uptime.
            handshaken = self.token is not None and await self._handshake(ws)
            self._seen()
            if not handshaken:
                self._uptime_base = None
                await ws.close()
                await asyncio.sleep(self.probe_interval_s)
                return
            while True:
                await self._recv(ws, self.stale_after_s)
                self._seen()

    async def _handshake(self, ws: ClientConnection) -> bool:
        """The probe's connect; True with hello-ok (uptime known), False when the token is refused."""
        req_id = f"probe:{uuid.uuid4()}"
        from clawdbot_otel import __version__

        await ws.send(orjson.dumps({
            "type": "req", "id": req_id, "method": "connect",
            "params": {
                "minProtocol": PROTOCOL_VERSION, "maxProtocol": PROTOCOL_VERSION,
                "client": {"id": PROBE_CLIENT_ID, "version": __version__, "platform": sys.platform,
                           "mode": PROBE_CLIENT_MODE, "instanceId": str(uuid.uuid4())},
                "role": "operator", "scopes": [], "caps": [], "auth": {"token": self.token},
            },
        }).decode())
        while True:
            frame = await self._recv(ws, self.open_timeout_s)
            if frame.get("type") == "res" and frame.get("id") == req_id:
                break
        payload: dict[str, Any] = frame["payload"] if isinstance(frame.get("payload"), dict) else {}
        if not frame.get("ok") or payload.get("type") != "hello-ok":
            # Not again: repeated failures from this address could get it rate-limited, real clients too.
            self.token = None
            error: dict[str, Any] = frame["error"] if isinstance(frame.get("error"), dict) else {}
            self.telemetry.log("WARN", "gateway", "Upstream gateway refused the monitor's token; liveness is "
                               "probed without it from now on (check --upstream-token / OPENCLAW_GATEWAY_TOKEN)",
                               metadata={"upstream": self.url, "error": error.get("message") or error.get("code")})
            return False
        snapshot: dict[str, Any] = payload["snapshot"] if isinstance(payload.get("snapshot"), dict) else {}
        uptime_ms = snapshot.get("uptimeMs")
        if isinstance(uptime_ms, int | float) and not isinstance(uptime_ms, bool) and uptime_ms >= 0:
            self._uptime_base = (uptime_ms / 1000, self.clock())
        server: dict[str, Any] = payload["server"] if isinstance(payload.get("server"), dict) else {}
        boot_id = server.get("bootId")
        if isinstance(boot_id, str):
            if self.boot_id is not None and boot_id != self.boot_id:
                self.telemetry.log("WARN", "gateway", "Upstream gateway restarted",
                                   metadata={"upstream": self.url, "boot_id": boot_id, "previous": self.boot_id})
            self.boot_id = boot_id
        return True

    @staticmethod
    async def _recv(ws: ClientConnection, timeout_s: float) -> dict[str, Any]:
        message = await asyncio.wait_for(ws.recv(), timeout_s)
        with contextlib.suppress(ValueError):
            frame = orjson.loads(message)
            if isinstance(frame, dict):
                return frame
        return {}

    # --- transitions -------------------------------------------------------------------------------
    def _seen(self) -> None:
        now = self.clock()
        if self._alive_since is None or self._last_seen is None or now - self._last_seen > self.stale_after_s:
            self._alive_since = now
        self._last_seen = now
        if self._down_reported:
            self._down_reported = False
            self.telemetry.log("INFO", "gateway", "Upstream gateway reachable again", metadata={"upstream": self.url})

    def _unreachable(self, why: str) -> None:
        self._last_seen = None
        self._alive_since = None
        self._uptime_base = None
        if not self._down_reported:  # once per outage, not once per retry
            self._down_reported = True
            self.telemetry.increment("gateway_errors_total", {"error_type": "runtime"})
            self.telemetry.log("ERROR", "gateway", "Upstream gateway unreachable",
                               metadata={"upstream": self.url, "error": why[:300]})

"""A small gateway protocol client (what the openclaw CLI does on the wire): the demo, tests and benches use it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from clawdbot_otel.frames import PROTOCOL_VERSION

__all__ = ["GatewayClient", "GatewayError"]


class GatewayError(RuntimeError):
    """An `ok: false` response: `code` and `message` from the gateway's ErrorShape."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class GatewayClient:
    """One connection: `connect()` does the challenge/hello handshake, `call()` one request.

    `agent()` returns the final response of a run (the gateway answers `agent` twice: accepted, then
    final). Events go to `on_event` (called in the reader task; keep it short).
    """

    def __init__(self, url: str, *, token: str | None = None, client_id: str = "cli",
                 on_event: Callable[[dict[str, Any]], None] | None = None, traceparent: str | None = None,
                 open_timeout_s: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.client_id = client_id
        self.on_event = on_event
        self.traceparent = traceparent
        self.open_timeout_s = open_timeout_s
        self.hello: dict[str, Any] | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._challenge: asyncio.Future[dict[str, Any]] | None = None

    async def __aenter__(self) -> GatewayClient:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def open(self) -> None:
        """The WebSocket only (no handshake): for tests that send raw frames."""
        loop = asyncio.get_running_loop()
        self._challenge = loop.create_future()
        self._ws = await connect(self.url, max_size=None, compression=None, open_timeout=self.open_timeout_s)
        self._reader = asyncio.create_task(self._read())

    async def connect(self, *, scopes: tuple[str, ...] = ("operator.write",)) -> dict[str, Any]:
        await self.open()
        assert self._challenge is not None
        await asyncio.wait_for(self._challenge, self.open_timeout_s)
        params: dict[str, Any] = {
            "minProtocol": PROTOCOL_VERSION, "maxProtocol": PROTOCOL_VERSION,
            "client": {"id": self.client_id, "version": "clawdbot-otel", "platform": "linux", "mode": "cli",
                       "instanceId": str(uuid.uuid4())},
            "caps": [], "role": "operator", "scopes": list(scopes),
        }
        if self.token is not None:
            params["auth"] = {"token": self.token}
        self.hello = await self.call("connect", params)
        return self.hello

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    def _next_id(self) -> str:
        return f"{next(self._ids)}:{uuid.uuid4()}"

    async def send_raw(self, message: str | bytes) -> None:
        await self.ws.send(message)

    def _expect(self, frame_id: str, count: int) -> list[asyncio.Future[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        self._waiters[frame_id] = list(futures)
        return futures

    async def request(self, method: str, params: Any = None, *, responses: int = 1,
                      timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Send one req; the raw response frames (1, or 2 for `agent`)."""
        frame_id = self._next_id()
        frame: dict[str, Any] = {"type": "req", "id": frame_id, "method": method}
        if params is not None:
            frame["params"] = params
        if self.traceparent is not None:
            frame["traceparent"] = self.traceparent
        futures = self._expect(frame_id, responses)
        await self.ws.send(orjson.dumps(frame).decode())
        try:
            return [await asyncio.wait_for(f, timeout_s) for f in futures]
        finally:
            self._waiters.pop(frame_id, None)

    async def call(self, method: str, params: Any = None, *, timeout_s: float = 60.0) -> Any:
        (res,) = await self.request(method, params, timeout_s=timeout_s)
        return _payload(res)

    async def agent(self, message: str, *, agent_id: str = "main", session_key: str | None = None,
                    timeout_s: float = 120.0, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"message": message, "agentId": agent_id, "deliver": False,
                                  "timeout": int(timeout_s), "idempotencyKey": str(uuid.uuid4()), **extra}
        if session_key is not None:
            params["sessionKey"] = session_key
        frame_id = self._next_id()
        frame: dict[str, Any] = {"type": "req", "id": frame_id, "method": "agent", "params": params}
        if self.traceparent is not None:
            frame["traceparent"] = self.traceparent
        accepted, final = self._expect(frame_id, 2)
        await self.ws.send(orjson.dumps(frame).decode())
        try:
            first = await asyncio.wait_for(accepted, timeout_s)
            if not first.get("ok"):
                return _payload(first)  # type: ignore[no-any-return]
            return _payload(await asyncio.wait_for(final, timeout_s))  # type: ignore[no-any-return]
        finally:
            self._waiters.pop(frame_id, None)

    async def _read(self) -> None:
        ws = self.ws
        try:
            async for message in ws:
                try:
                    frame = orjson.loads(message)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(frame, dict):
                    continue
                kind = frame.get("type")
                if kind == "res":
                    key = str(frame.get("id"))
                    waiters = self._waiters.get(key)
                    if waiters:
                        waiters.pop(0).set_result(frame)
                        if not waiters:
                            self._waiters.pop(key, None)
                    elif self.on_event is not None:
                        self.on_event(frame)  # an answer nobody waits for (e.g. an error to a bad frame)
                elif kind == "event":
                    if frame.get("event") == "connect.challenge" and self._challenge and not self._challenge.done():
                        self._challenge.set_result(frame.get("payload") or {})
                    if self.on_event is not None:
                        self.on_event(frame)
        except Exception:
            pass
        finally:
            error = ConnectionError(f"connection closed ({ws.close_code} {ws.close_reason or ''})".strip())
            for waiters in self._waiters.values():
                for future in waiters:
                    if not future.done():
                        future.set_exception(error)
            if self._challenge is not None and not self._challenge.done():
                self._challenge.set_exception(error)


def _payload(res: dict[str, Any]) -> Any:
    if res.get("ok"):
        return res.get("payload")
    error = res.get("error") or {}
    raise GatewayError(str(error.get("code") or "ERROR"), str(error.get("message") or ""))

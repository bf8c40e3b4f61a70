"""A simulated OpenClaw agent runtime that answers the gateway protocol with the real frame shapes.

It speaks what the captures in tests/gateway/fixtures show (connect.challenge, hello-ok, `agent`
accepted -> `agent` events lifecycle/item/usage/assistant, `chat` and `task` events -> final res
with `result.meta.agentMeta`), plus `agent.wait`, `sessions.list`, `sessions.usage`,
`cron.list|status|run|runs`, `health`, `status`, and `tick`, `health` and `cron` events.

Behaviour is chosen by the message text, so tests are deterministic and the demo decides the mix:

    "tool" -> a tool call; "failing tool" -> the tool fails; "slow" -> the tool is slow;
    "fail the model" -> every model attempt fails (the run fails after retries);
    "flaky" -> the first model attempt fails, the retry succeeds;
    "spawn" -> a sub-agent through the spawn-queue folder; "message <agent>" -> an inbox message;
    "stale" -> the task's heartbeat file is left behind; "invalid" -> the L2 validation fails;
    "opus" / "haiku" -> that model family.

Side effects are real files in the workspace folders (`_workspace.Workspace`), which the runtime
answers, archives and deletes: it runs only in a workspace it created (`claim_for_simulation`). File
work runs in worker threads, so a slow disk or a FIFO among the files never stalls the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from clawdbot_otel.frames import (
    ERROR_INVALID_REQUEST,
    ERROR_UNAVAILABLE,
    PROTOCOL_VERSION,
    RequestFrame,
    error_response,
    response,
)

from ._cron import DEFAULT_CRON_JOBS, CronJob, SimulatedCron
from ._scheduler_files import RunRef, SchedulerFolders, now_ms
from ._turns import PROVIDER, AgentTurns
from ._workspace import Workspace

__all__ = ["EmbeddedRuntime", "Peer"]

SERVER_VERSION = "clawdbot-otel-embedded"
METHODS = ("connect", "agent", "agent.wait", "sessions.list", "sessions.usage", "cron.list", "cron.status",
           "cron.run", "cron.runs", "health", "status")
EVENTS = ("connect.challenge", "agent", "chat", "task", "cron", "health", "tick")


class Peer(Protocol):
    """A client connection as the runtime sees it (the server implements it)."""

    id: str
    authed: bool
    events: bool
    """Receives every broadcast event; without scopes (OpenClaw's probe client) only ticks and health."""

    def send_frame(self, frame: dict[str, Any]) -> None: ...

    def close_later(self, code: int, reason: str) -> None: ...


class EmbeddedRuntime:
    """Answers requests from `Peer`s; events for everyone go through `broadcast(event, payload)`.

    `time_scale` multiplies every simulated delay (tests use 0.01); `tick_interval_s` is the tick and
    health event period; `cron_jobs` run on their own schedule (`every_s`, not scaled).
    """

    def __init__(
        self,
        workspace: Workspace,
        broadcast: Callable[[str, dict[str, Any]], None],
        *,
        token: str | None = None,
        time_scale: float = 1.0,
        tick_interval_s: float = 30.0,
        heartbeat_interval_s: float = 5.0,
        retention_s: float = 300.0,
        cron_jobs: tuple[CronJob, ...] = DEFAULT_CRON_JOBS,
        seed: int | None = None,
        trace_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.workspace = workspace.claim_for_simulation()
        self.broadcast = broadcast
        self.token = token
        self.time_scale = time_scale
        self.tick_interval_s = tick_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.retention_s = retention_s
        self.trace_lookup = trace_lookup
        self.boot_id = str(uuid.uuid4())
        self.started_ms = now_ms()
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.cron = SimulatedCron(cron_jobs, started_ms=self.started_ms, broadcast=broadcast, spawn=self._spawn,
                                  run_turn=self._run_agent_turn,
                                  store_path=str(self.workspace.scheduler / "cron" / "jobs.json"))
        self.folders = SchedulerFolders(self.workspace, self._rng, time_scale=time_scale,
                                        heartbeat_interval_s=heartbeat_interval_s, retention_s=retention_s,
                                        spawn=self._spawn, run_subagent=self._run_agent_turn,
                                        trace_fields=self._trace_fields)
        self.turns = AgentTurns(self._rng, self.folders, broadcast=broadcast, spawn=self._spawn, time_scale=time_scale)
        self._loops: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._tick_loop()),
            asyncio.create_task(self.cron.loop()),
            asyncio.create_task(self.folders.spawn_queue_loop()),
            asyncio.create_task(self.folders.inbox_loop()),
            asyncio.create_task(self.folders.cleanup_loop()),
        ]

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        self._tasks.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)

    def challenge(self) -> dict[str, Any]:
        return {"nonce": str(uuid.uuid4()), "ts": now_ms(), "capabilities": ["model-catalog-snapshot"]}

    # --- requests --------------------------------------------------------------------------------
    def handle(self, peer: Peer, frame: RequestFrame) -> None:
        """Answer one request (long ones answer from a task); never raises."""
        method = frame.method
        params = frame.params if isinstance(frame.params, dict) else {}
        try:
            if method == "connect":
                self._connect(peer, frame.id, params)
                return
            if not peer.authed:
                peer.send_frame(error_response(frame.id, ERROR_INVALID_REQUEST,
                                               "invalid handshake: first request must be connect"))
                return
            handler = self._handlers.get(method)
            if handler is None:
                peer.send_frame(error_response(frame.id, ERROR_INVALID_REQUEST, f"unknown method: {method}"))
                return
            handler(self, peer, frame.id, params)
        except Exception as exc:  # a bug in the simulation must not take the gateway down
            peer.send_frame(error_response(frame.id, ERROR_UNAVAILABLE, f"internal error: {type(exc).__name__}"))

    def _connect(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        lo, hi = params.get("minProtocol", PROTOCOL_VERSION), params.get("maxProtocol", PROTOCOL_VERSION)
        if not (isinstance(lo, int) and isinstance(hi, int) and lo <= PROTOCOL_VERSION <= hi):
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST, "protocol mismatch",
                                           details={"expectedProtocol": PROTOCOL_VERSION}))
            peer.close_later(1002, "protocol mismatch")
            return
        auth = params.get("auth")
        presented = auth.get("token") if isinstance(auth, dict) else None
        if self.token is not None and presented != self.token:
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST,
                                           "unauthorized: gateway token mismatch (set the gateway token)"))
            peer.close_later(1008, "unauthorized")
            return
        peer.authed = True
        scopes = params.get("scopes") if isinstance(params.get("scopes"), list) else ["operator.write"]
        peer.events = bool(scopes)
        peer.send_frame(response(frame_id, {
            "type": "hello-ok", "protocol": PROTOCOL_VERSION,
            "server": {"version": SERVER_VERSION, "bootId": self.boot_id, "connId": peer.id},
            "features": {"methods": list(METHODS), "events": list(EVENTS)},
            "snapshot": {"health": self._health(), "uptimeMs": now_ms() - self.started_ms},
            "auth": {"method": "token" if self.token is not None else "none",
                     "role": params.get("role") or "operator", "scopes": scopes},
            "policy": {"maxPayload": 26214400, "maxBufferedBytes": 52428800,
                       "tickIntervalMs": int(self.tick_interval_s * 1000)},
        }))

    def _agent(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        message = params.get("message")
        if not isinstance(message, str) or not message:
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST, "invalid agent params: message required"))
            return
        agent_id = str(params.get("agentId") or "main")
        session_key = str(params.get("sessionKey") or f"agent:{agent_id}:main")
        run_id = str(params.get("idempotencyKey") or uuid.uuid4())
        if run_id in self.turns.runs:
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST, "duplicate idempotencyKey"))
            return
        model = params.get("model") if isinstance(params.get("model"), str) else None
        run = self.turns.new_run(run_id, session_key, agent_id)
        peer.send_frame(response(frame_id, {"runId": run_id, "sessionKey": session_key, "agentId": agent_id,
                                            "status": "accepted", "acceptedAt": now_ms()}))

        async def go() -> None:
            final = await self.turns.run_turn(run, message, model)
            if final.get("ok"):
                peer.send_frame(response(frame_id, final["payload"]))
            else:
                peer.send_frame(error_response(frame_id, ERROR_UNAVAILABLE, final["error"], retryable=True))

        self._spawn(go())

    def _agent_wait(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        run = self.turns.runs.get(str(params.get("runId")))
        if run is None:
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST, "unknown runId"))
            return
        timeout_ms = params.get("timeoutMs")
        timeout_s = timeout_ms / 1000 if isinstance(timeout_ms, int) else 30.0

        async def go() -> None:
            try:
                result = await asyncio.wait_for(asyncio.shield(run.done), timeout_s)
            except TimeoutError:
                peer.send_frame(response(frame_id, {"runId": run.run_id, "status": "timeout"}))
                return
            peer.send_frame(response(frame_id, {
                "runId": run.run_id, "status": "ok" if result.get("ok") else "error",
                "startedAt": run.started_at, "endedAt": result.get("endedAt"), "error": result.get("error"),
            }))

        self._spawn(go())

    def _sessions_list(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        limit = params.get("limit") if isinstance(params.get("limit"), int) else 50
        sessions = list(reversed(self.turns.sessions.values()))[:limit]
        peer.send_frame(response(frame_id, {"ts": now_ms(), "count": len(self.turns.sessions), "sessions": [
            {"key": s.key, "kind": "direct", "sessionId": s.session_id, "agentId": s.agent_id,
             "updatedAt": s.updated_at, "model": s.model, "modelProvider": PROVIDER,
             "inputTokens": s.usage["input"], "outputTokens": s.usage["output"],
             "totalTokens": s.usage["input"] + s.usage["output"] + s.usage["cacheRead"] + s.usage["cacheWrite"]}
            for s in sessions]}))

    def _sessions_usage(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        rows = []
        totals = {"input": 0.0, "output": 0.0, "cacheRead": 0.0, "cacheWrite": 0.0, "totalTokens": 0.0,
                  "totalCost": 0.0}
        for s in self.turns.sessions.values():
            u = s.usage
            total = u["input"] + u["output"] + u["cacheRead"] + u["cacheWrite"]
            rows.append({"key": s.key, "model": s.model, "usage": {
                "input": u["input"], "output": u["output"], "cacheRead": u["cacheRead"],
                "cacheWrite": u["cacheWrite"], "totalTokens": total, "totalCost": round(u["cost"], 6)}})
            for k in ("input", "output", "cacheRead", "cacheWrite"):
                totals[k] += u[k]
            totals["totalTokens"] += total
            totals["totalCost"] += u["cost"]
        totals["totalCost"] = round(totals["totalCost"], 6)
        peer.send_frame(response(frame_id, {"updatedAt": now_ms(), "sessions": rows, "totals": totals}))

    def _cron_list(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        peer.send_frame(response(frame_id, self.cron.job_list()))

    def _cron_status(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        peer.send_frame(response(frame_id, self.cron.status()))

    def _cron_run(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        job_id = str(params.get("id") or params.get("jobId"))
        if job_id not in self.cron.jobs:
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST, f"unknown cron job: {job_id}"))
            return
        ran = self.cron.start_run(job_id, "manual")
        peer.send_frame(response(frame_id, {"ok": True, "ran": ran, **({} if ran else {"reason": "already-running"})}))

    def _cron_runs(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        peer.send_frame(response(frame_id, self.cron.runs(params.get("id") or params.get("jobId"))))

    def _health_req(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        peer.send_frame(response(frame_id, self._health()))

    def _status(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        recent = [{"key": s.key, "updatedAt": s.updated_at} for s in list(reversed(self.turns.sessions.values()))[:10]]
        peer.send_frame(response(frame_id, {
            "server": {"version": SERVER_VERSION, "bootId": self.boot_id},
            "uptimeMs": now_ms() - self.started_ms, "activeRuns": self.turns.active_runs,
            "sessions": {"count": len(self.turns.sessions), "recent": recent},
            "cron": {"jobs": len(self.cron.jobs)}}))

    _handlers: ClassVar[dict[str, Callable[[EmbeddedRuntime, Peer, str, dict[str, Any]], None]]] = {
        "agent": _agent, "agent.wait": _agent_wait, "sessions.list": _sessions_list,
        "sessions.usage": _sessions_usage, "cron.list": _cron_list, "cron.status": _cron_status,
        "cron.run": _cron_run, "cron.runs": _cron_runs, "health": _health_req, "status": _status,
    }

    def _health(self) -> dict[str, Any]:
        return {"ok": True, "ts": now_ms(), "durationMs": 1, "defaultAgentId": "main",
                "heartbeatSeconds": int(self.tick_interval_s),
                "sessions": {"count": len(self.turns.sessions),
                             "recent": [{"key": s.key, "updatedAt": s.updated_at}
                                        for s in list(reversed(self.turns.sessions.values()))[:5]]}}

    def _trace_fields(self, run: RunRef) -> dict[str, str]:
        """The run's session as a `traceparent` field: the watchers parent their spans on it."""
        traceparent = self.trace_lookup(run.run_id) if self.trace_lookup is not None else None
        return {"traceparent": traceparent} if traceparent else {}

    async def _run_agent_turn(self, run_id: str, session_key: str, agent_id: str, text: str,
                            model: str | None) -> dict[str, Any]:
        return await self.turns.run_turn(self.turns.new_run(run_id, session_key, agent_id), text, model)

    # --- tick ------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            self.broadcast("tick", {"ts": now_ms()})
            self.broadcast("health", self._health())

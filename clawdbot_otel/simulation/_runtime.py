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
import math
import random
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
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
from ._scheduler_files import MODELS, RunRef, SchedulerFolders, now_ms
from ._workspace import Workspace

__all__ = ["EmbeddedRuntime", "Peer"]

SERVER_VERSION = "clawdbot-otel-embedded"
PROVIDER = "anthropic"
#: USD per million tokens: input, output (cache reads 0.1x input, cache writes 1.25x input).
PRICES = {"opus": (5.0, 25.0), "sonnet": (3.0, 15.0), "haiku": (1.0, 5.0)}
METHODS = ("connect", "agent", "agent.wait", "sessions.list", "sessions.usage", "cron.list", "cron.status",
           "cron.run", "cron.runs", "health", "status")
EVENTS = ("connect.challenge", "agent", "chat", "task", "cron", "health", "tick")
#: Tool -> the argument summary the real gateway shows as the item's `meta` (and in its title).
TOOL_META = {"ls": ".", "read": "README.md", "exec": "make test", "web_search": "release notes", "write": "notes.md"}
TOOLS = tuple(TOOL_META)
_MESSAGE_TO = re.compile(r"message\s+([a-z][a-z0-9_-]{0,31})")


class Peer(Protocol):
    """A client connection as the runtime sees it (the server implements it)."""

    id: str
    authed: bool
    events: bool
    """Receives every broadcast event; without scopes (OpenClaw's probe client) only ticks and health."""

    def send_frame(self, frame: dict[str, Any]) -> None: ...

    def close_later(self, code: int, reason: str) -> None: ...


@dataclass
class _Session:
    key: str
    session_id: str
    agent_id: str
    model: str
    updated_at: int = 0
    turns: int = 0
    usage: dict[str, float] = field(default_factory=lambda: {"input": 0, "output": 0, "cacheRead": 0,
                                                             "cacheWrite": 0, "cost": 0.0})


@dataclass
class _Run:
    run_id: str
    session_key: str
    agent_id: str
    started_at: int
    done: asyncio.Future[dict[str, Any]]


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
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.cron = SimulatedCron(cron_jobs, started_ms=self.started_ms, broadcast=broadcast, spawn=self._spawn,
                                  run_turn=self._run_agent_turn,
                                  store_path=str(self.workspace.scheduler / "cron" / "jobs.json"))
        self.folders = SchedulerFolders(self.workspace, self._rng, time_scale=time_scale,
                                        heartbeat_interval_s=heartbeat_interval_s, retention_s=retention_s,
                                        spawn=self._spawn, run_subagent=self._run_agent_turn,
                                        trace_fields=self._trace_fields)
        self._loops: list[asyncio.Task[None]] = []
        self.active_runs = 0

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
        if run_id in self._runs:
            peer.send_frame(error_response(frame_id, ERROR_INVALID_REQUEST, "duplicate idempotencyKey"))
            return
        model = params.get("model") if isinstance(params.get("model"), str) else None
        run = self._new_run(run_id, session_key, agent_id)
        peer.send_frame(response(frame_id, {"runId": run_id, "sessionKey": session_key, "agentId": agent_id,
                                            "status": "accepted", "acceptedAt": now_ms()}))

        async def go() -> None:
            final = await self._run_turn(run, message, model)
            if final.get("ok"):
                peer.send_frame(response(frame_id, final["payload"]))
            else:
                peer.send_frame(error_response(frame_id, ERROR_UNAVAILABLE, final["error"], retryable=True))

        self._spawn(go())

    def _agent_wait(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        run = self._runs.get(str(params.get("runId")))
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
        sessions = list(reversed(self._sessions.values()))[:limit]
        peer.send_frame(response(frame_id, {"ts": now_ms(), "count": len(self._sessions), "sessions": [
            {"key": s.key, "kind": "direct", "sessionId": s.session_id, "agentId": s.agent_id,
             "updatedAt": s.updated_at, "model": s.model, "modelProvider": PROVIDER,
             "inputTokens": s.usage["input"], "outputTokens": s.usage["output"],
             "totalTokens": s.usage["input"] + s.usage["output"] + s.usage["cacheRead"] + s.usage["cacheWrite"]}
            for s in sessions]}))

    def _sessions_usage(self, peer: Peer, frame_id: str, params: dict[str, Any]) -> None:
        rows = []
        totals = {"input": 0.0, "output": 0.0, "cacheRead": 0.0, "cacheWrite": 0.0, "totalTokens": 0.0,
                  "totalCost": 0.0}
        for s in self._sessions.values():
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
        recent = [{"key": s.key, "updatedAt": s.updated_at} for s in list(reversed(self._sessions.values()))[:10]]
        peer.send_frame(response(frame_id, {
            "server": {"version": SERVER_VERSION, "bootId": self.boot_id},
            "uptimeMs": now_ms() - self.started_ms, "activeRuns": self.active_runs,
            "sessions": {"count": len(self._sessions), "recent": recent},
            "cron": {"jobs": len(self.cron.jobs)}}))

    _handlers: ClassVar[dict[str, Callable[[EmbeddedRuntime, Peer, str, dict[str, Any]], None]]] = {
        "agent": _agent, "agent.wait": _agent_wait, "sessions.list": _sessions_list,
        "sessions.usage": _sessions_usage, "cron.list": _cron_list, "cron.status": _cron_status,
        "cron.run": _cron_run, "cron.runs": _cron_runs, "health": _health_req, "status": _status,
    }

    def _health(self) -> dict[str, Any]:
        return {"ok": True, "ts": now_ms(), "durationMs": 1, "defaultAgentId": "main",
                "heartbeatSeconds": int(self.tick_interval_s),
                "sessions": {"count": len(self._sessions),
                             "recent": [{"key": s.key, "updatedAt": s.updated_at}
                                        for s in list(reversed(self._sessions.values()))[:5]]}}

    # --- agent turns -----------------------------------------------------------------------------
    def _new_run(self, run_id: str, session_key: str, agent_id: str) -> _Run:
        run = _Run(run_id, session_key, agent_id, now_ms(), asyncio.get_running_loop().create_future())
        self._runs[run_id] = run
        while len(self._runs) > 2000:
            _, old = self._runs.popitem(last=False)
            if not old.done.done():
                old.done.cancel()
        return run

    def _session(self, key: str, agent_id: str, model: str) -> _Session:
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session(key, str(uuid.uuid4()), agent_id, model)
            while len(self._sessions) > 500:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
        return session

    def _pick_model(self, session_key: str, text: str, model: str | None) -> str:
        if model:
            return MODELS.get(model, model)
        for family in ("opus", "haiku", "sonnet"):
            if family in text:
                return MODELS[family]
        kind = session_key.split(":")
        if kind[0] == "cron":
            return MODELS["haiku"]
        return MODELS["sonnet"]

    async def _run_turn(self, run: _Run, message: str, model_override: str | None) -> dict[str, Any]:
        """One run: the frames of the captures, in their order. Returns {ok, payload|error, endedAt}."""
        self.active_runs += 1
        try:
            result = await self._turn(run, message, model_override)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = {"ok": False, "error": f"internal error: {type(exc).__name__}", "endedAt": now_ms()}
        finally:
            self.active_runs -= 1
        if not run.done.done():
            run.done.set_result(result)
        return result

    async def _turn(self, run: _Run, message: str, model_override: str | None) -> dict[str, Any]:
        text = message.lower()
        model = self._pick_model(run.session_key, text, model_override)
        family = next((f for f, m in MODELS.items() if m == model), "sonnet")
        session = self._session(run.session_key, run.agent_id, model)
        seq = 0
        base = {"runId": run.run_id, "sessionKey": run.session_key, "agentId": run.agent_id}

        def agent_event(stream: str, data: dict[str, Any], with_session: bool = True) -> None:
            nonlocal seq
            seq += 1
            payload = {**base, "stream": stream, "data": data, "seq": seq, "ts": now_ms()}
            if with_session:
                payload["sessionId"] = session.session_id
            self.broadcast("agent", payload)

        task_id = str(uuid.uuid4())
        task = {"id": task_id, "taskId": task_id, "kind": _session_kind(run.session_key), "runtime": "cli",
                "status": "running", "title": message[:80], "agentId": run.agent_id, "sessionKey": run.session_key,
                "runId": run.run_id, "createdAt": run.started_at, "updatedAt": run.started_at,
                "startedAt": run.started_at}

        def task_event(**changes: Any) -> None:
            task.update(changes, updatedAt=now_ms())
            self.broadcast("task", {"action": "upserted", "task": dict(task)})

        task_event(execution={"state": "running"})
        stop_heartbeat = asyncio.Event()
        heartbeat = self._spawn(self.folders.heartbeat(task, model, stop_heartbeat, stale="stale" in text))
        started_at = now_ms()
        agent_event("lifecycle", {"phase": "start", "startedAt": started_at})
        usage = {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}
        calls = 0
        output_total = 0
        tools_planned = self._plan_tools(text)
        tools_completed: list[str] = []
        fail_model = "fail the model" in text or "model error" in text
        flaky = "flaky" in text
        error: str | None = None
        attempts = 0
        reply = ""
        try:
            while True:
                agent_event("lifecycle", {"phase": "model", "provider": PROVIDER, "model": model})
                await self._sleep(self._rng.uniform(0.05, 0.3))
                attempts += 1
                if fail_model or (flaky and attempts == 1):
                    agent_event("lifecycle", {
                        "phase": "finishing", "error": "The AI service is temporarily overloaded. Please try again.",
                        "errorObservation": {"provider": PROVIDER, "model": model, "failoverReason": "overloaded",
                                             "providerRuntimeFailureKind": "http_529"},
                        "aborted": False, "livenessState": "blocked", "endedAt": now_ms()})
                    if attempts >= 3:
                        error = "The AI service is temporarily overloaded. Please try again in a moment."
                        break
                    delay_ms = 200
                    agent_event("run_status", {
                        "phase": "retrying", "retryAttempt": attempts, "maxRetries": 2, "delayMs": delay_ms,
                        "attempt": attempts + 1, "maxAttempts": 3, "reason": "overloaded",
                        "message": f"Provider temporarily unavailable. Retrying in {math.ceil(delay_ms / 1000)}s "
                                   f"({attempts}/2)."}, with_session=False)
                    # The real gateway clears the failed attempt's (empty) reply before it retries.
                    agent_event("assistant", {"itemId": f"{uuid.uuid4()}:1", "text": "", "delta": "", "replace": True},
                                with_session=False)
                    await self._sleep(delay_ms / 1000)
                    agent_event("lifecycle", {"phase": "start", "startedAt": now_ms()})
                    continue
                calls += 1
                prompt = 900 + 3 * len(message) + 150 * calls + self._rng.randint(0, 400)
                cached = int(prompt * 0.6) if session.turns > 0 else 0
                usage["input"] += prompt - cached
                usage["cacheRead"] += cached
                usage["cacheWrite"] += 0 if session.turns > 0 or calls > 1 else int(prompt * 0.5)
                if tools_planned:
                    tool = tools_planned.pop(0)
                    produced = self._rng.randint(8, 40)
                    output_total += produced
                    agent_event("usage", {"outputTokens": output_total}, with_session=False)
                    if await self._tool_call(run, tool, text, agent_event):
                        tools_completed.append(tool.partition("!")[0])
                    continue
                produced = self._rng.randint(12, 180)
                output_total += produced
                reply = f"Done: {message[:60]}"
                agent_event("assistant", {"text": reply[:5], "delta": reply[:5], "itemId": f"{run.run_id}:1"},
                            with_session=False)
                delta = {"role": "assistant", "content": [{"type": "text", "text": reply[:5]}], "timestamp": now_ms()}
                self.broadcast("chat", {**base, "seq": seq, "state": "delta", "deltaText": reply[:5], "message": delta})
                agent_event("assistant", {"text": reply, "delta": reply[5:], "itemId": f"{run.run_id}:1"},
                            with_session=False)
                agent_event("usage", {"outputTokens": output_total}, with_session=False)
                agent_event("lifecycle", {"phase": "finishing", "stopReason": "stop", "aborted": False,
                                          "livenessState": "working", "endedAt": now_ms()})
                break
        finally:
            stop_heartbeat.set()
        usage["output"] = output_total
        agent_event("lifecycle", {"phase": "model", "provider": None, "model": None})
        ended_at = now_ms()
        # Validation goes out while the run is open (as the real gateway's "execution finished" task
        # event does): the observer parents it on the session span, and a run without a request (cron,
        # sub-agent) is closed by its lifecycle end.
        task_event(execution={"state": "finished"},
                   validation=self._validations(text, ended_at) if error is None else [])
        end: dict[str, Any] = {"phase": "end", "startedAt": started_at, "endedAt": ended_at, "aborted": False,
                               "stopReason": "error" if error else "stop", "livenessState": "working",
                               "executionSettled": True}
        if error:
            end["error"] = error
        else:
            end["terminalReceipt"] = {
                "runId": run.run_id, "sessionId": session.session_id, "turnId": run.run_id,
                "requested": {"provider": PROVIDER, "model": model},
                "effective": {"provider": PROVIDER, "model": model, "responseModel": model},
                "successfulToolNames": tools_completed, "rerouted": False, "terminalDisposition": "visible"}
            end["terminalReply"] = {"disposition": "visible", "text": reply}
        agent_event("lifecycle", end)
        price_in, price_out = PRICES[family]
        cost = (usage["input"] * price_in + usage["output"] * price_out + usage["cacheRead"] * price_in * 0.1
                + usage["cacheWrite"] * price_in * 1.25) / 1_000_000
        cost = round(cost, 6) if not error else 0.0
        total = sum(usage.values())
        session.turns += 1
        session.updated_at = ended_at
        for key in ("input", "output", "cacheRead", "cacheWrite"):
            session.usage[key] += usage[key]
        session.usage["cost"] += cost
        if error is None:
            self.broadcast("chat", {**base, "seq": seq, "state": "final", "stopReason": "stop",
                                    "message": {"role": "assistant", "content": [{"type": "text", "text": reply}],
                                                "timestamp": ended_at}})
        with contextlib.suppress(Exception):
            await heartbeat  # its last write must land before the final one
        await self.folders.finish_heartbeat(task, model, "failed" if error else "completed")
        del task["validation"]  # reported once, above
        task_event(status="failed" if error else "completed", endedAt=ended_at,
                   terminalSummary="failed" if error else "completed")
        if error is not None:
            return {"ok": False, "error": error, "endedAt": ended_at}
        usage_out = {**usage, "total": total, "cost": {"total": cost}}
        return {"ok": True, "endedAt": ended_at, "payload": {
            "runId": run.run_id, "status": "ok", "summary": "completed",
            "result": {"payloads": [{"text": reply, "mediaUrl": None}], "meta": {
                "durationMs": ended_at - started_at, "aborted": False,
                "agentMeta": {"sessionId": session.session_id, "sessionFile": run.session_key, "provider": PROVIDER,
                              "model": model, "usage": usage_out, "assistantTurns": calls, "costUsd": cost}}}}}

    def _plan_tools(self, text: str) -> list[str]:
        plan: list[str] = []
        if "spawn" in text:
            plan.append("sessions_spawn")
        if _MESSAGE_TO.search(text) or "inbox" in text:
            plan.append("sessions_send")
        if "failing tool" in text:
            plan.append("exec!fail")
        elif "slow" in text:
            plan.append("web_search!slow")
        elif "tool" in text:
            plan.append(self._rng.choice(TOOLS))
        return plan

    async def _tool_call(self, run: _Run, tool: str, text: str, agent_event: Callable[..., None]) -> bool:
        """One tool call as `item` events; True when it completed."""
        name, _, mode = tool.partition("!")
        call_id = f"toolu_{uuid.uuid4().hex[:20]}"
        started = now_ms()
        match = _MESSAGE_TO.search(text)
        recipient = match.group(1) if match else "coordinator"
        meta = recipient if name == "sessions_send" else TOOL_META.get(name, "")
        item = {"itemId": f"tool:{call_id}", "toolCallId": call_id, "name": name, "kind": "tool",
                "title": f"{name.capitalize()} {meta}".rstrip(), "meta": meta, "commandBearing": name == "exec"}
        agent_event("item", {**item, "phase": "start", "status": "running", "startedAt": started},
                    with_session=False)
        status, error = "completed", None
        try:
            if name == "sessions_spawn":
                result = await self.folders.request_spawn(run, text)
                if result.get("status") != "spawned":
                    status, error = "error", str(result.get("error") or "spawn failed")
            elif name == "sessions_send":
                self.folders.send_inbox(run, recipient, text)
                await self._sleep(0.02)
            elif mode == "fail":
                await self._sleep(self._rng.uniform(0.02, 0.1))
                status, error = "error", "Command exited with code 1: permission denied"
            elif mode == "slow":
                await self._sleep(self._rng.uniform(2.0, 4.0))
            else:
                await self._sleep(self._rng.uniform(0.01, 0.15))
        except TimeoutError:
            status, error = "error", "timed out"
        end = {**item, "phase": "end", "status": status, "startedAt": started, "endedAt": now_ms()}
        if error:
            end["error"] = error
            end["isError"] = True
        agent_event("item", end, with_session=False)
        return error is None

    def _validations(self, text: str, at: int) -> list[dict[str, Any]]:
        out = [{"layer": "L1", "result": "pass", "at": at}]
        if "invalid" in text:
            out.append({"layer": "L2", "result": "fail", "reason": "missing_evidence", "at": at})
            return out
        out.append({"layer": "L2", "result": "pass", "at": at})
        out.append({"layer": "L3", "result": "pass" if self._rng.random() > 0.1 else "fail",
                    "reason": None, "at": at})
        if out[-1]["result"] == "fail":
            out[-1]["reason"] = "reviewer_rejected"
        return out

    # --- callbacks of the scheduler folders and cron ----------------------------------------------------------
    def _trace_fields(self, run: RunRef) -> dict[str, str]:
        """The run's session as a `traceparent` field: the watchers parent their spans on it."""
        traceparent = self.trace_lookup(run.run_id) if self.trace_lookup is not None else None
        return {"traceparent": traceparent} if traceparent else {}

    async def _run_agent_turn(self, run_id: str, session_key: str, agent_id: str, text: str,
                            model: str | None) -> dict[str, Any]:
        return await self._run_turn(self._new_run(run_id, session_key, agent_id), text, model)

    # --- tick ------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            self.broadcast("tick", {"ts": now_ms()})
            self.broadcast("health", self._health())


def _session_kind(session_key: str) -> str:
    parts = session_key.split(":")
    if parts[0] == "cron":
        return "cron"
    return "subagent" if "subagent" in parts else "cli"

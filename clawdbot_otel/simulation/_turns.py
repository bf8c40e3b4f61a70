"""The simulated agent turns: sessions, runs, model calls, tool calls, sub-agent spawns and inbox
messages, told as the `agent`, `chat` and `task` events of the captures, in their order."""

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
from typing import Any

from ._scheduler_files import MODELS, SchedulerFolders, now_ms

__all__ = ["PROVIDER", "AgentTurns", "Run", "Session"]

PROVIDER = "anthropic"
#: USD per million tokens: input, output (cache reads 0.1x input, cache writes 1.25x input).
PRICES = {"opus": (5.0, 25.0), "sonnet": (3.0, 15.0), "haiku": (1.0, 5.0)}
#: Tool -> the argument summary the real gateway shows as the item's `meta` (and in its title).
TOOL_META = {"ls": ".", "read": "README.md", "exec": "make test", "web_search": "release notes", "write": "notes.md"}
TOOLS = tuple(TOOL_META)
_MESSAGE_TO = re.compile(r"message\s+([a-z][a-z0-9_-]{0,31})")


@dataclass
class Session:
    key: str
    session_id: str
    agent_id: str
    model: str
    updated_at: int = 0
    turns: int = 0
    usage: dict[str, float] = field(default_factory=lambda: {"input": 0, "output": 0, "cacheRead": 0,
                                                             "cacheWrite": 0, "cost": 0.0})


@dataclass
class Run:
    run_id: str
    session_key: str
    agent_id: str
    started_at: int
    done: asyncio.Future[dict[str, Any]]


class AgentTurns:
    """Runs agent turns; `broadcast(event, payload)` reaches every client, `spawn` starts a background
    task the runtime owns, `folders` holds the scheduler files a turn writes."""

    def __init__(self, rng: random.Random, folders: SchedulerFolders, *,
                 broadcast: Callable[[str, dict[str, Any]], None], spawn: Callable[[Any], asyncio.Task[Any]],
                 time_scale: float) -> None:
        self.folders = folders
        self.broadcast = broadcast
        self.time_scale = time_scale
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.active_runs = 0
        self._rng = rng
        self._spawn = spawn

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)

    def new_run(self, run_id: str, session_key: str, agent_id: str) -> Run:
        run = Run(run_id, session_key, agent_id, now_ms(), asyncio.get_running_loop().create_future())
        self.runs[run_id] = run
        while len(self.runs) > 2000:
            _, old = self.runs.popitem(last=False)
            if not old.done.done():
                old.done.cancel()
        return run

    def session(self, key: str, agent_id: str, model: str) -> Session:
        session = self.sessions.get(key)
        if session is None:
            session = self.sessions[key] = Session(key, str(uuid.uuid4()), agent_id, model)
            while len(self.sessions) > 500:
                self.sessions.popitem(last=False)
        else:
            self.sessions.move_to_end(key)
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

    async def run_turn(self, run: Run, message: str, model_override: str | None) -> dict[str, Any]:
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

    async def _turn(self, run: Run, message: str, model_override: str | None) -> dict[str, Any]:
        text = message.lower()
        model = self._pick_model(run.session_key, text, model_override)
        family = next((f for f, m in MODELS.items() if m == model), "sonnet")
        session = self.session(run.session_key, run.agent_id, model)
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

    async def _tool_call(self, run: Run, tool: str, text: str, agent_event: Callable[..., None]) -> bool:
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


def _session_kind(session_key: str) -> str:
    parts = session_key.split(":")
    if parts[0] == "cron":
        return "cron"
    return "subagent" if "subagent" in parts else "cli"

"""The simulated scheduler's folders: task heartbeat files, the spawn queue (the runtime's sub-agent
spawner answers it) and the agents' inboxes, with the housekeeping that keeps them bounded.

File work goes through asyncio.to_thread: a slow disk must not stall the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import stat
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from ._workspace import Workspace, read_json, write_json

__all__ = ["KNOWN_AGENTS", "MODELS", "RunRef", "SchedulerFolders", "now_ms"]

MODELS = {"opus": "claude-opus-4-5", "sonnet": "claude-sonnet-4-5", "haiku": "claude-haiku-4-5"}
KNOWN_AGENTS = ("main", "coordinator", "researcher", "builder", "reviewer")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RunRef(Protocol):
    """What the folders need of an agent run: who it is."""

    run_id: str
    session_key: str
    agent_id: str


class SchedulerFolders:
    """Writes and answers the scheduler files of `workspace` as OpenClaw's scheduler would.

    `spawn` starts a background task (the runtime owns them); `run_subagent(run_id, session_key,
    agent_id, text, model)` runs a spawned sub-agent's turn; `trace_fields(run)` gives the fields that
    parent a file's spans on the run (a `traceparent`).
    """

    def __init__(self, workspace: Workspace, rng: random.Random, *, time_scale: float, heartbeat_interval_s: float,
                 retention_s: float, spawn: Callable[[Any], asyncio.Task[Any]],
                 run_subagent: Callable[[str, str, str, str, str | None], Awaitable[dict[str, Any]]],
                 trace_fields: Callable[[RunRef], dict[str, str]]) -> None:
        self.workspace = workspace
        self.time_scale = time_scale
        self.heartbeat_interval_s = heartbeat_interval_s
        self.retention_s = retention_s
        self.run_subagent = run_subagent
        self.trace_fields = trace_fields
        self._rng = rng
        self._spawn = spawn
        self._spawned: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._picked_up: set[str] = set()
        self._stale_heartbeats: set[Path] = set()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)

    async def heartbeat(self, task: dict[str, Any], model: str, stop: asyncio.Event, *, stale: bool) -> None:
        """Rewrite the task's heartbeat file until `stop` (a "stale" task writes once and goes quiet)."""
        path = self.workspace.heartbeats / f"{task['taskId']}.json"
        record = {"taskId": task["taskId"], "status": "running", "startedAt": task["startedAt"],
                  "lastUpdate": now_ms(), "model": model, "agentId": task["agentId"],
                  "sessionKey": task["sessionKey"], "runId": task["runId"]}
        interval_s = self.heartbeat_interval_s * min(self.time_scale, 1.0)
        while True:
            record["lastUpdate"] = now_ms()
            with contextlib.suppress(OSError):
                await asyncio.to_thread(write_json, path, record)
            if stale:  # a task that died without cleaning up: the file stays, never updated
                self._stale_heartbeats.add(path)
                return
            # Stopped, not cancelled: a write in flight in its thread would land after the final one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if stop.is_set():
                return

    async def finish_heartbeat(self, task: dict[str, Any], model: str, status: str) -> None:
        path = self.workspace.heartbeats / f"{task['taskId']}.json"
        if path in self._stale_heartbeats:
            return
        with contextlib.suppress(OSError):
            await asyncio.to_thread(write_json, path, {
                "taskId": task["taskId"], "status": status, "startedAt": task["startedAt"], "lastUpdate": now_ms(),
                "model": model, "agentId": task["agentId"]})

    async def request_spawn(self, run: RunRef, text: str) -> dict[str, Any]:
        request_id = f"spawn-{uuid.uuid4().hex[:12]}"
        family = "haiku" if "haiku" in text else ("opus" if "opus" in text else "sonnet")
        label = self._rng.choice(("researcher", "builder", "reviewer"))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._spawned[request_id] = future
        try:
            await asyncio.to_thread(write_json, self.workspace.spawn_requests / f"{request_id}.json", {
                "requestId": request_id, "requestedBy": run.session_key, "requestedAt": now_ms(),
                "spawn": {"label": label, "model": MODELS[family], "task": f"sub-task of: {text[:100]}"},
                "waitForResult": False, "parentRunId": run.run_id, "agentId": run.agent_id,
                **self.trace_fields(run),
            })
            return await asyncio.wait_for(future, 60 * max(self.time_scale, 0.1))
        except OSError as exc:
            return {"status": "failed", "error": f"cannot write the spawn request: {exc.strerror or exc}"}
        finally:
            self._spawned.pop(request_id, None)

    def unanswered_requests(self) -> list[str]:
        """Names of the request files that are regular files without a response (in a thread)."""
        with os.scandir(self.workspace.spawn_responses) as entries:
            answered = {entry.name for entry in entries}
        with os.scandir(self.workspace.spawn_requests) as entries:
            # is_file(): a FIFO or folder named *.json is not a request (reading a FIFO would block).
            return sorted(entry.name for entry in entries
                          if entry.name.endswith(".json") and not entry.name.startswith(".")
                          and entry.name not in answered and entry.is_file())

    async def spawn_queue_loop(self) -> None:
        """The spawner: pick up request files without a response, answer them, run the sub-agent."""
        while True:
            await asyncio.sleep(0.25 * min(self.time_scale * 4, 1.0))
            try:
                pending = await asyncio.to_thread(self.unanswered_requests)
            except OSError:
                continue
            for name in [n for n in pending if n not in self._picked_up][:20]:
                self._picked_up.add(name)
                self._spawn(self._process_spawn(name))

    async def _process_spawn(self, name: str) -> None:
        path = self.workspace.spawn_requests / name
        response_path = self.workspace.spawn_responses / name
        try:
            request = await asyncio.to_thread(read_json, path)
            if not isinstance(request, dict):
                return  # not a request (yet): retried at the next pass
            request_id = str(request.get("requestId") or path.stem)
            await self._sleep(self._rng.uniform(0.2, 1.5))  # queue latency: request -> spawn
            agent_id = str(request.get("agentId") or "main")
            session_key = f"agent:{agent_id}:subagent:{uuid.uuid4()}"
            run_id = str(uuid.uuid4())
            answer = {"requestId": request_id, "processedAt": now_ms(), "status": "spawned",
                      "sessionKey": session_key, "runId": run_id}
            await asyncio.to_thread(write_json, response_path, answer)
            future = self._spawned.get(request_id)
            if future is not None and not future.done():
                future.set_result(answer)
            spawn = request.get("spawn")
            if not isinstance(spawn, dict):
                spawn = {}
            model = spawn.get("model") if isinstance(spawn.get("model"), str) else None
            task_text = str(spawn.get("task") or "sub-task").replace("spawn", "do").replace("message", "note")
            result = await self.run_subagent(run_id, session_key, agent_id, f"{task_text} use a tool", model)
            # A sub-agent lives on after its first turn (and so is seen active between scans).
            await self._sleep(self._rng.uniform(15.0, 40.0))
            final = {**answer, "status": "completed" if result.get("ok") else "failed"}
            if not result.get("ok"):
                final["error"] = result.get("error")
            await asyncio.to_thread(write_json, response_path, final)
        except OSError:
            return  # a response that cannot be written: the requester times out, as with a dead spawner
        finally:
            self._picked_up.discard(name)

    def send_inbox(self, run: RunRef, recipient: str, text: str) -> None:
        """Route one message: after a delivery delay it lands in the recipient's inbox (or failed/)."""
        message = {"id": f"msg-{uuid.uuid4().hex[:12]}", "timestamp": now_ms(), "from": run.agent_id,
                   "to": recipient, "type": "request", "subject": text[:60], "content": text[:200],
                   **self.trace_fields(run)}
        folder = self.workspace.inboxes / recipient
        if recipient not in KNOWN_AGENTS:
            folder = folder / "failed"
            message["error"] = f"no such agent: {recipient}"

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / f"{message['id']}.json", message)

        async def deliver() -> None:
            await self._sleep(self._rng.uniform(0.05, 0.8))
            with contextlib.suppress(OSError):
                await asyncio.to_thread(write)

        self._spawn(deliver())

    def archive_read_messages(self, cutoff: float) -> None:
        """The recipients read their messages: one delivered before `cutoff` moves to archive/ (in a thread)."""
        for path in list(self.workspace.inboxes.glob("*/*.json"))[:200]:
            with contextlib.suppress(OSError):
                st = path.stat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime <= cutoff:
                    archive = path.parent / "archive"
                    archive.mkdir(exist_ok=True)
                    path.replace(archive / path.name)

    async def inbox_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5 * min(self.time_scale * 2, 1.0))
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.archive_read_messages, time.time() - 2.0 * self.time_scale)

    def expire_files(self, now: float) -> set[Path]:
        """Bounded disk: answered spawn requests, archived messages and old heartbeats expire (in a thread).

        Returns the heartbeat files it removed.
        """
        cutoff = now - self.retention_s
        ws = self.workspace
        for path in ws.spawn_responses.glob("*.json"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    (ws.spawn_requests / path.name).unlink(missing_ok=True)
                    path.unlink()
        for pattern in ("*/archive/*.json", "*/failed/*.json"):
            for path in ws.inboxes.glob(pattern):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
        removed: set[Path] = set()
        for path in ws.heartbeats.glob("*.json"):
            with contextlib.suppress(OSError):
                age = now - path.stat().st_mtime
                record = read_json(path) if age > 30 else None
                running = isinstance(record, dict) and record.get("status") == "running"
                if age > self.retention_s or (age > 30 and not running):
                    path.unlink()
                    removed.add(path)
        return removed

    async def cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(10)
            try:
                removed = await asyncio.to_thread(self.expire_files, time.time())
            except OSError:
                continue
            self._stale_heartbeats -= removed

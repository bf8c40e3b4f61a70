"""The scheduler folders of a Clawdbot workspace (design: ~/clawd/scheduler/{spawn-queue,inboxes,heartbeats}).

The layout and record shapes are the ones `clawdbot_otel.collect`'s watchers read:

    scheduler/spawn-queue/requests/<id>.json   {requestId, requestedBy, requestedAt, spawn: {label, model, task}}
    scheduler/spawn-queue/responses/<id>.json  {requestId, processedAt, status, sessionKey, error}
    scheduler/inboxes/<agent>/<id>.json        {id, timestamp, from, to, type, subject, content}: delivered
    scheduler/inboxes/<agent>/archive/<id>.json  read by the agent, archived
    scheduler/inboxes/<agent>/failed/<id>.json   undeliverable (dead letter)
    scheduler/heartbeats/<task id>.json        {taskId, status, startedAt, lastUpdate, model}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Workspace", "write_json"]


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls) -> Workspace:
        return cls(Path.home() / "clawd")

    @property
    def scheduler(self) -> Path:
        return self.root / "scheduler"

    @property
    def spawn_queue(self) -> Path:
        return self.scheduler / "spawn-queue"

    @property
    def spawn_requests(self) -> Path:
        return self.spawn_queue / "requests"

    @property
    def spawn_responses(self) -> Path:
        return self.spawn_queue / "responses"

    @property
    def inboxes(self) -> Path:
        return self.scheduler / "inboxes"

    @property
    def heartbeats(self) -> Path:
        return self.scheduler / "heartbeats"

    def create(self) -> Workspace:
        for path in (self.spawn_requests, self.spawn_responses, self.inboxes, self.heartbeats):
            path.mkdir(parents=True, exist_ok=True)
        return self


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename): a watcher never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)

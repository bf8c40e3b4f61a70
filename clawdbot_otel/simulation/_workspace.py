"""The scheduler folders of a Clawdbot workspace (design: ~/clawd/scheduler/{spawn-queue,inboxes,heartbeats}).

The layout and record shapes are the ones `clawdbot_otel.collect`'s watchers read:

    scheduler/spawn-queue/requests/<id>.json   {requestId, requestedBy, requestedAt, spawn: {label, model, task}}
    scheduler/spawn-queue/responses/<id>.json  {requestId, processedAt, status, sessionKey, error}
    scheduler/inboxes/<agent>/<id>.json        {id, timestamp, from, to, type, subject, content}: delivered
    scheduler/inboxes/<agent>/archive/<id>.json  read by the agent, archived
    scheduler/inboxes/<agent>/failed/<id>.json   undeliverable (dead letter)
    scheduler/heartbeats/<task id>.json        {taskId, status, startedAt, lastUpdate, model}

The embedded runtime answers, archives and deletes these files, so it runs only in a workspace of its
own: `claim_for_simulation()` accepts a new or empty folder (and marks it) or one it marked before.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from clawdbot_otel.paths import state_dir

__all__ = [
    "MAX_RECORD_BYTES",
    "SIMULATION_MARKER",
    "ForeignWorkspaceError",
    "Workspace",
    "read_json",
    "write_json",
]

#: The file that says "the simulated runtime owns this folder" (it deletes files here).
SIMULATION_MARKER = ".clawdbot-otel-simulation"
_MARKER_TEXT = (b"This folder belongs to the clawdbot-otel embedded gateway's simulated runtime, which answers,\n"
                b"archives and deletes the scheduler files in it. Do not point a real Clawdbot scheduler here.\n")
#: Records larger than this are not read: the scheduler's records are a few hundred bytes.
MAX_RECORD_BYTES = 1 << 20


class ForeignWorkspaceError(RuntimeError):
    """The folder has content the simulated runtime did not write: it refuses to touch it."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls) -> Workspace:
        """The real Clawdbot workspace: for watchers that only read it."""
        return cls(Path.home() / "clawd")

    @classmethod
    def simulation_default(cls) -> Workspace:
        """The embedded runtime's own workspace, under the state dir (never the user's real ~/clawd)."""
        return cls(state_dir() / "simulated-workspace")

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

    @property
    def marker(self) -> Path:
        return self.root / SIMULATION_MARKER

    def create(self) -> Workspace:
        for path in (self.spawn_requests, self.spawn_responses, self.inboxes, self.heartbeats):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def claim_for_simulation(self) -> Workspace:
        """Mark a new or empty folder as the simulator's and create its folders; refuse anything else.

        Raises `ForeignWorkspaceError` for a folder with content and no marker: it may be a real
        scheduler's workspace, whose requests the simulator would answer and whose files it would delete.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not self.marker.is_file():
                if any(self.root.iterdir()):
                    raise ForeignWorkspaceError(
                        f"{self.root} is not empty and was not created by the simulated runtime (no "
                        f"{SIMULATION_MARKER} file); it may be a real Clawdbot workspace, whose spawn requests, "
                        "inbox messages and heartbeats the simulation would answer, archive and delete. Pass "
                        "--workspace with a new or empty folder, or use --upstream to observe a real gateway.")
                self.marker.write_bytes(_MARKER_TEXT)
        except OSError as exc:
            raise ForeignWorkspaceError(
                f"cannot use {self.root} as the simulated runtime's workspace ({exc.strerror or exc}); pass "
                "--workspace with a new or empty folder you can write to") from exc
        return self.create()


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename): a watcher never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def read_json(path: Path, *, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """The JSON value of a regular file of at most `max_bytes`; None for anything else.

    Anything else: gone, a FIFO or folder, too big, unreadable, not JSON. O_NONBLOCK because opening
    a FIFO without a writer blocks forever (it changes nothing for regular files), and the type is
    checked on the open descriptor, so a FIFO swapped in after a listing cannot hang the reader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = max_bytes + 1  # one byte more than allowed tells "too big" from "exactly the limit"
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > max_bytes:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None

"""The collection points a gateway process runs beside its observer: the watchers over the workspace's
scheduler folders and the resource sampler."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from clawdbot_otel import Telemetry
from clawdbot_otel.collect import InboxWatcher, ResourceSampler, SpawnQueueWatcher, TaskHeartbeatWatcher
from clawdbot_otel.simulation import Workspace

__all__ = ["start_collectors", "stop_collectors"]


def start_collectors(
    telemetry: Telemetry, workspace: Workspace, *, started_at: float, create: bool,
    heartbeat_stale_after_s: float = 300.0, uptime: Callable[[], float | None] | None = None,
    pid: int | None = None,
) -> list[Any]:
    """The one integration point with `clawdbot_otel.collect`, run inside the gateway process.

    The spawn-queue, inbox and heartbeat watchers over the workspace's scheduler folders and the
    resource sampler (gateway uptime, memory, CPU; the workspace's disk). With `create` (embedded
    mode, whose simulated runtime writes the files) the folders are created and scanned often (the
    demo's files live for seconds); otherwise (proxy mode, the real scheduler's workspace) they are
    only read, at the watchers' default intervals, and a folder that does not exist yet is waited for.
    `pid`: the gateway's process, when the collectors run in another one (the proxy's observer process).
    """
    if create:
        workspace.create()
        intervals: dict[str, Any] = {"spawn": {"interval_s": 0.5}, "inbox": {"interval_s": 0.5},
                                     "heartbeat": {"interval_s": 2.0}}
    else:
        # The real queue's history is not recounted at a restart; sub-agents are the observer's to count.
        intervals = {"spawn": {"count_existing": False, "count_subagents": False},
                     "inbox": {"count_existing": False}, "heartbeat": {}}
    started: list[Any] = [
        SpawnQueueWatcher(telemetry, workspace.spawn_queue, **intervals["spawn"]),
        InboxWatcher(telemetry, workspace.inboxes, **intervals["inbox"]),
        TaskHeartbeatWatcher(telemetry, workspace.heartbeats, stale_after_s=heartbeat_stale_after_s,
                             **intervals["heartbeat"]),
    ]
    for watcher in started:
        watcher.start()
    paths = [str(workspace.root)] if workspace.root.exists() else ["~"]
    sampler = ResourceSampler(telemetry, paths=paths, process_name="gateway", gateway=True, started_at=started_at,
                              uptime=uptime, pid=pid)
    return [*started, sampler]


async def stop_collectors(collectors: list[Any]) -> None:
    """Stop and close what `start_collectors` started (each on its own: one failing stops no other)."""
    for collector in collectors:
        with contextlib.suppress(Exception):
            stop = getattr(collector, "stop", None)
            if stop is not None:
                result = stop()
                if isinstance(result, Awaitable):
                    await result
            close = getattr(collector, "close", None)
            if close is not None:
                close()
    collectors.clear()

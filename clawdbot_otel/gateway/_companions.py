"""What runs beside a frame observer, in whichever process holds it (the gateway's own, or the proxy's
observer process): the sweep of requests and runs that never ended, the upstream monitor, the watchers
over the workspace's scheduler folders with the resource sampler, and the OpenClaw state watcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawdbot_otel import Telemetry
from clawdbot_otel.collect import InboxWatcher, ResourceSampler, SpawnQueueWatcher, TaskHeartbeatWatcher
from clawdbot_otel.simulation import Workspace

from ._feed import FrameConsumer
from ._monitor import UpstreamMonitor

__all__ = ["Companions", "ObserverCompanions", "start_collectors", "stop_collectors"]


@dataclass(frozen=True, slots=True)
class Companions:
    """Which companions run, and how (one value for both processes that can hold the observer).

    `workspace` None: no folder watchers and no resource sampler. `create_folders`: the embedded
    runtime writes the workspace's files (folders created, scanned often); otherwise they are the real
    scheduler's, only read. `pid`: the gateway's process when the companions run in another one."""

    sweep_interval_s: float
    workspace: Workspace | None = None
    create_folders: bool = False
    heartbeat_stale_after_s: float = 300.0
    pid: int | None = None
    openclaw_state: Path | None = None
    openclaw_state_interval_s: float = 15.0


class ObserverCompanions:
    """Starts and stops what `Companions` names beside `consumer`'s observer; `monitor` (proxy mode) is
    the upstream's probe, whose uptime the resource sampler reports."""

    def __init__(self, telemetry: Telemetry, consumer: FrameConsumer, companions: Companions,
                 monitor: UpstreamMonitor | None = None) -> None:
        self.telemetry = telemetry
        self.consumer = consumer
        self.companions = companions
        self.monitor = monitor
        self.collectors: list[Any] = []
        self.state_watcher: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, started_at: float) -> None:
        """`started_at`: when the gateway started (its uptime, for the resource sampler)."""
        c = self.companions
        self._tasks.append(asyncio.create_task(self._sweep_loop()))
        if self.monitor is not None:
            self._tasks.append(asyncio.create_task(self.monitor.run()))
        if c.workspace is not None:
            self.collectors = start_collectors(
                self.telemetry, c.workspace, started_at=started_at, create=c.create_folders,
                heartbeat_stale_after_s=c.heartbeat_stale_after_s, pid=c.pid,
                uptime=self.monitor.uptime_s if self.monitor is not None else None)
        if c.openclaw_state is not None:
            from clawdbot_otel.collect import OpenClawStateWatcher

            self.state_watcher = OpenClawStateWatcher(self.telemetry, c.openclaw_state,
                                                      interval_s=c.openclaw_state_interval_s,
                                                      proxy_counted=self.consumer.observer.counted_run)
            self.state_watcher.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.state_watcher is not None:
            await self.state_watcher.stop()
            self.state_watcher.close()
            self.state_watcher = None
        await stop_collectors(self.collectors)

    async def _sweep_loop(self) -> None:
        observer = self.consumer.observer
        while True:
            await asyncio.sleep(self.companions.sweep_interval_s)
            self.consumer.guard(observer.sweep)


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

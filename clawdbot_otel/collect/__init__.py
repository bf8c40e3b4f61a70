"""Collection points: each knows its source (job runs, queue files, inbox files, heartbeat files,
the process) and feeds the catalogue's metrics, spans and logs through a `Telemetry` facade.

    from clawdbot_otel import get_telemetry
    from clawdbot_otel.collect import SpawnQueueWatcher

    watcher = SpawnQueueWatcher(get_telemetry())       # ~/clawd/scheduler/spawn-queue/
    watcher.start()                                    # on the running event loop; await watcher.stop()

Watchers never raise into the host: bad files are counted in
`clawdbot_otel_source_errors_total{source, reason}` and logged once per file version.
"""

from __future__ import annotations

from ._cli import register
from ._gauges import GaugeCallbacks
from .heartbeats import TaskHeartbeatWatcher
from .inbox import InboxWatcher
from .openclaw_state import OpenClawStateWatcher, openclaw_state_dir
from .resources import ResourceSampler
from .scheduler import JobRun, SchedulerInstrumentation
from .spawn_queue import SpawnQueueWatcher
from .tasks import TaskInstrumentation

__all__ = [
    "GaugeCallbacks",
    "InboxWatcher",
    "JobRun",
    "OpenClawStateWatcher",
    "ResourceSampler",
    "SchedulerInstrumentation",
    "SpawnQueueWatcher",
    "TaskHeartbeatWatcher",
    "TaskInstrumentation",
    "openclaw_state_dir",
    "register",
]

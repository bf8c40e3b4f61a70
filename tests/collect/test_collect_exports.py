"""The public surface of `clawdbot_otel.collect` is exactly `__all__` (what the gateway wires in)."""

from __future__ import annotations

from clawdbot_otel import collect


def test_all_is_the_public_surface() -> None:
    assert sorted(collect.__all__) == [
        "CronScheduler", "InboxWatcher", "JobRun", "ResourceSampler",
        "SchedulerInstrumentation", "SpawnQueueWatcher", "TaskHeartbeatWatcher", "TaskInstrumentation",
    ]
    assert all(getattr(collect, name) is not None for name in collect.__all__)

"""Task heartbeats: active and stale gauges, stale transitions counted once, ages, lifecycle logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clawdbot_otel.collect import TaskHeartbeatWatcher, _files
from clawdbot_otel.testing import Capture

from .helpers import T0, FakeClock, histogram, logs, source_errors, value, write_json


class Heartbeats:
    def __init__(self, cap: Capture, root: Path, clock: FakeClock) -> None:
        self.root = root
        self.clock = clock
        self.watcher = TaskHeartbeatWatcher(cap.telemetry, root, stale_after_s=300, now=clock)

    def beat(self, task_id: str, *, status: str = "running", last_update: Any = None, **extra: Any) -> Path:
        data = {"taskId": task_id, "status": status, "startedAt": T0, "model": "sonnet",
                "lastUpdate": self.clock() if last_update is None else last_update, **extra}
        return write_json(self.root / f"{task_id}.json", data, mtime=self.clock())

    def scan(self, times: int = 1) -> None:
        for _ in range(times):
            self.watcher.scan_once()


@pytest.fixture
def hb(cap: Capture, tmp_path: Path, clock: FakeClock) -> Heartbeats:
    return Heartbeats(cap, tmp_path / "heartbeats", clock)


def test_active_heartbeats_and_ages(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    hb.beat("t1")
    hb.beat("t2", last_update=T0 - 40)
    clock.advance(20)
    hb.scan()
    assert value(cap, "heartbeat.active") == 2
    assert value(cap, "heartbeat.stale.current") == 0
    assert histogram(cap, "heartbeat.age") == (2, 80.0)  # 20 s and 60 s
    assert [r["metadata"]["task_id"] for r in logs(cap, "Heartbeat created")] == ["t1", "t2"]


def test_stale_counted_once_and_again_after_recovery(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    hb.beat("t1")
    hb.scan()
    clock.advance(301)
    hb.scan(3)
    assert value(cap, "heartbeat.stale") == 1
    assert value(cap, "heartbeat.stale.current") == 1
    assert value(cap, "heartbeat.active") == 1  # stale heartbeats are still active tasks
    [stale] = logs(cap, "Heartbeat stale")
    assert stale["level"] == "WARN"
    assert stale["metadata"]["task_id"] == "t1"
    assert stale["metadata"]["age_s"] == 301.0
    hb.beat("t1")  # the task writes again
    hb.scan()
    assert value(cap, "heartbeat.stale.current") == 0
    assert len(logs(cap, "Heartbeat recovered")) == 1
    clock.advance(400)
    hb.scan(2)
    assert value(cap, "heartbeat.stale") == 2


def test_finished_heartbeats_are_neither_active_nor_stale(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    hb.beat("t1", status="completed")
    clock.advance(1000)
    hb.scan(2)
    assert value(cap, "heartbeat.active") == 0
    assert value(cap, "heartbeat.stale") is None
    assert histogram(cap, "heartbeat.age") == (0, 0.0)
    assert len(logs(cap, "Heartbeat finished")) == 1


def test_removed_heartbeat_is_logged(cap: Capture, hb: Heartbeats) -> None:
    hb.beat("t1").unlink()
    hb.scan()  # never seen: nothing to say
    hb.beat("t2")
    hb.scan()
    (hb.root / "t2.json").unlink()
    hb.scan()
    assert [r["metadata"]["task_id"] for r in logs(cap, "Heartbeat removed")] == ["t2"]
    assert value(cap, "heartbeat.active") == 0


def test_updates_are_debug_logs(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    hb.beat("t1")
    hb.scan()
    clock.advance(10)
    hb.beat("t1")
    hb.scan()
    [update] = logs(cap, "Heartbeat updated")
    assert update["level"] == "DEBUG"


def test_last_update_missing_uses_the_file_time(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    write_json(hb.root / "t1.json", {"taskId": "t1", "status": "running"}, mtime=T0 - 500)
    hb.scan()
    assert value(cap, "heartbeat.stale.current") == 1


def test_rewrite_in_progress_keeps_the_heartbeat(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    hb.beat("t1")
    hb.scan()
    clock.advance(5)
    write_json(hb.root / "t1.json", b'{"taskId": "t1", "sta', mtime=clock())  # a non-atomic rewrite
    hb.scan()
    assert value(cap, "heartbeat.active") == 1
    assert logs(cap, "Heartbeat removed") == []
    hb.beat("t1")
    hb.scan()
    assert len(logs(cap, "Heartbeat created")) == 1


def test_epoch_millisecond_timestamps(cap: Capture, hb: Heartbeats, clock: FakeClock) -> None:
    hb.beat("t1", last_update=int((T0 - 30) * 1000))
    hb.scan()
    assert histogram(cap, "heartbeat.age") == (1, 30.0)


def test_unreadable_file_is_read_once_permission_returns(cap: Capture, hb: Heartbeats,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    hb.beat("t1")
    locked = hb.beat("t2")
    real_open = _files._open_for_read

    def refuse(path: str) -> int:
        if path == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path)

    monkeypatch.setattr(_files, "_open_for_read", refuse)
    hb.scan(2)
    assert value(cap, "heartbeat.active") == 1
    monkeypatch.undo()  # e.g. chmod, which leaves the mtime alone
    hb.scan()
    assert value(cap, "heartbeat.active") == 2
    assert source_errors(cap, "heartbeat") == {"unreadable": 1}

"""Bad input for every folder watcher: counted once by reason, logged once, and nothing good is lost."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clawdbot_otel import Telemetry
from clawdbot_otel.collect import InboxWatcher, SpawnQueueWatcher, TaskHeartbeatWatcher, _files
from clawdbot_otel.collect._polling import PollingWatcher
from clawdbot_otel.testing import Capture

from .helpers import T0, FakeClock, logs, source_errors, value, write_json


@dataclass
class Case:
    source: str
    make: Callable[[Telemetry, Path, FakeClock], PollingWatcher]
    folder: str  # where the watcher reads records, relative to its root
    good: dict[str, Any]  # one valid record
    good_seen: Callable[[Capture], bool]  # whether the valid record made it into the metrics


CASES = [
    Case(
        "spawn_queue",
        lambda t, root, clock: SpawnQueueWatcher(t, root, now=clock, max_file_bytes=4096),
        "requests",
        {"requestId": "good", "requestedBy": "main", "requestedAt": T0, "spawn": {"label": "x", "model": "opus"}},
        lambda cap: value(cap, "spawn.queue.depth") == 1,
    ),
    Case(
        "inbox",
        lambda t, root, clock: InboxWatcher(t, root, now=clock, max_file_bytes=4096),
        "main",
        {"id": "good", "timestamp": T0, "from": "worker", "to": "main", "type": "note"},
        lambda cap: value(cap, "inbox.messages", event="delivered", from_agent="worker", to_agent="main") == 1,
    ),
    Case(
        "heartbeat",
        lambda t, root, clock: TaskHeartbeatWatcher(t, root, now=clock, max_file_bytes=4096),
        ".",
        {"taskId": "good", "status": "running", "startedAt": T0, "lastUpdate": T0},
        lambda cap: value(cap, "heartbeat.active") == 1,
    ),
]


@pytest.fixture(params=CASES, ids=[c.source for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


class Setup:
    def __init__(self, case: Case, cap: Capture, tmp_path: Path, clock: FakeClock) -> None:
        self.case = case
        self.cap = cap
        self.clock = clock
        self.root = tmp_path / "root"
        self.folder = self.root / case.folder
        self.folder.mkdir(parents=True)
        write_json(self.folder / "good.json", case.good)
        self.watcher = case.make(cap.telemetry, self.root, clock)

    def scan(self, times: int = 1) -> None:
        for _ in range(times):
            self.watcher.scan_once()

    def errors(self) -> dict[str, int]:
        return source_errors(self.cap, self.case.source)

    def good_seen(self) -> bool:
        return self.case.good_seen(self.cap)


@pytest.fixture
def setup(case: Case, cap: Capture, tmp_path: Path, clock: FakeClock) -> Setup:
    return Setup(case, cap, tmp_path, clock)


def test_malformed_json_is_counted_once_and_logged_once(setup: Setup) -> None:
    bad = write_json(setup.folder / "bad.json", b'{"id" 1}')
    setup.scan(3)
    assert setup.errors() == {"malformed_json": 1}
    assert len([r for r in logs(setup.cap, "Skipped") if r["metadata"]["path"] == str(bad)]) == 1
    assert setup.good_seen()


def test_binary_garbage(setup: Setup) -> None:
    write_json(setup.folder / "png.json", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write_json(setup.folder / "latin1.json", b'{"id": "caf\xe9"}')
    setup.scan(2)
    assert setup.errors() == {"binary": 2}
    assert setup.good_seen()


def test_half_written_file_is_retried_until_complete(setup: Setup) -> None:
    path = setup.folder / "late.json"
    full = dict(setup.case.good)
    full[next(iter(full))] = "late"  # another id
    text = repr(full).replace("'", '"').encode()
    write_json(path, text[: len(text) // 2], mtime=setup.clock())
    setup.scan(3)
    assert setup.errors() == {"partial_write": 1}
    write_json(path, text, mtime=setup.clock() + 1)  # the writer finishes
    setup.scan(2)
    assert setup.errors() == {"partial_write": 1}  # never malformed: it completed in time
    assert next(r for r in logs(setup.cap, "Skipped") if r["metadata"]["reason"] == "partial_write")["level"] == "DEBUG"


def test_half_written_file_that_never_completes_becomes_malformed(setup: Setup) -> None:
    write_json(setup.folder / "stuck.json", b'{"id": "stuck", "ti', mtime=setup.clock())
    setup.scan()
    setup.clock.advance(_files.PARTIAL_GRACE_S + 1)
    setup.scan(3)
    assert setup.errors() == {"partial_write": 1, "malformed_json": 1}


def test_file_deleted_between_listing_and_reading(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    doomed = write_json(setup.folder / "doomed.json", setup.case.good)
    real_open = _files._open_for_read

    def delete_then_open(path: str) -> int:
        if path == str(doomed):
            os.unlink(path)
        return real_open(path)

    monkeypatch.setattr(_files, "_open_for_read", delete_then_open)
    setup.scan(2)
    assert setup.errors() == {"vanished": 1}
    assert setup.good_seen()


@pytest.mark.timeout(10)
def test_fifo_is_not_opened(setup: Setup) -> None:
    os.mkfifo(setup.folder / "pipe.json")  # opening it for reading would block without O_NONBLOCK
    setup.scan(3)
    assert setup.errors() == {"not_a_file": 1}
    assert setup.good_seen()


def test_directory_named_like_a_file(setup: Setup) -> None:
    (setup.folder / "dir.json").mkdir()
    setup.scan(2)
    assert setup.errors() == {"not_a_file": 1}
    assert setup.good_seen()


def test_permission_error_at_open(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = write_json(setup.folder / "locked.json", setup.case.good)
    real_open = _files._open_for_read

    def refuse(path: str) -> int:
        if path == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path)

    monkeypatch.setattr(_files, "_open_for_read", refuse)
    setup.scan(3)
    assert setup.errors() == {"unreadable": 1}
    assert logs(setup.cap, "Skipped")[0]["metadata"]["detail"] == "cannot read: Permission denied"
    assert setup.good_seen()


def test_valid_json_with_wrong_fields(setup: Setup) -> None:
    write_json(setup.folder / "list.json", [1, 2, 3])
    write_json(setup.folder / "types.json", {key: [] for key in setup.case.good})
    setup.scan(2)
    assert setup.errors() == {"invalid_fields": 2}
    assert setup.good_seen()


def test_oversized_file_is_not_read(setup: Setup) -> None:
    write_json(setup.folder / "huge.json", b'{"pad": "' + b"x" * 5000 + b'"}')
    setup.scan(2)
    assert setup.errors() == {"oversized": 1}


def test_a_bad_file_fixed_later_is_read(setup: Setup) -> None:
    path = write_json(setup.folder / "fixed.json", b"not json at all")
    setup.scan()
    write_json(path, setup.case.good | {next(iter(setup.case.good)): "fixed"}, mtime=T0 + 5)
    setup.scan()
    assert setup.errors() == {"malformed_json": 1}
    assert logs(setup.cap, "Skipped")[0]["level"] == "WARN"


def test_folder_that_does_not_exist_yet(case: Case, cap: Capture, tmp_path: Path, clock: FakeClock) -> None:
    root = tmp_path / "later"
    watcher = case.make(cap.telemetry, root, clock)
    for _ in range(3):
        watcher.scan_once()
    assert source_errors(cap, case.source) == {}
    waiting = [r["metadata"]["path"] for r in logs(cap, "Waiting for folder")]
    assert waiting and len(waiting) == len(set(waiting))  # each missing folder said once, not every scan
    write_json(root / case.folder / "good.json", case.good)
    watcher.scan_once()
    assert case.good_seen(cap)


def test_root_that_is_a_file(case: Case, cap: Capture, tmp_path: Path, clock: FakeClock) -> None:
    root = tmp_path / "file"
    root.write_text("x")
    watcher = case.make(cap.telemetry, root, clock)
    for _ in range(3):
        watcher.scan_once()
    # once per folder the watcher reads (the spawn queue reads requests/ and responses/)
    assert source_errors(cap, case.source) == {"not_a_directory": 2 if case.source == "spawn_queue" else 1}

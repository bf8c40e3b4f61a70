"""Writes that fail (full disk, log folder replaced): the host carries on, the line goes to stderr, counted."""

from __future__ import annotations

import fcntl
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import orjson
import pytest

from clawdbot_otel import StreamSink
from clawdbot_otel.logfiles import LevelFileSink, _rotation
from clawdbot_otel.testing import Capture, capture_telemetry

from .conftest import FakeClock

ERRORS = "clawdbot_otel.log.write_errors"


@contextmanager
def telemetry_with(sink: LevelFileSink, *, stderr_sink: bool = False) -> Iterator[Capture]:
    """A production-mode (non-strict) Telemetry whose log sinks are `sink` (after a stderr StreamSink)."""
    with capture_telemetry(strict=False) as cap:
        t = cap.telemetry
        sinks = [StreamSink(), sink] if stderr_sink else [sink]
        t.bind(t.meter_provider, t.tracer_provider, t.logger_provider, log_sinks=sinks)
        yield cap


def errors(cap: Capture) -> dict[tuple[str, str], int]:
    return {(p.attributes["sink"], p.attributes["reason"]): p.value for p in cap.metric_points(ERRORS)}


@pytest.fixture
def recheck_every_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # Writers notice a file or folder changed by hand within a second; tests do not wait that long.
    monkeypatch.setattr(_rotation, "_RECHECK_S", 0.0)


def test_a_full_disk_sends_the_line_to_stderr_and_counts_it(tmp_path: Path, clock: FakeClock,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "info.log").symlink_to("/dev/full")  # every write: ENOSPC
    sink = LevelFileSink(tmp_path, clock=clock)
    with telemetry_with(sink) as cap:
        cap.telemetry.log("INFO", "gateway", "Request completed", request_id="req-001")
        cap.telemetry.log("ERROR", "gateway", "still filed")  # other destinations are unaffected
        assert errors(cap) == {("LevelFileSink", "ENOSPC"): 1}
        assert cap.telemetry.dropped[("log_sink:ENOSPC", "LevelFileSink")] == 1
    sink.close()
    [record] = [orjson.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    assert record["message"] == "Request completed"
    assert record["request_id"] == "req-001"
    assert orjson.loads((tmp_path / "error" / "error.log").read_bytes())["message"] == "still filed"


@pytest.mark.parametrize(("fallback", "copies"), [("stderr", 2), (None, 1)])
def test_beside_a_stderr_sink_a_failed_line_is_printed_once(
    tmp_path: Path, clock: FakeClock, capfd: pytest.CaptureFixture[str], fallback: Literal["stderr"] | None, copies: int
) -> None:
    # The default sinks of setup(): a StreamSink on stderr, then the file sink.
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "info.log").symlink_to("/dev/full")
    sink = LevelFileSink(tmp_path, clock=clock, fallback=fallback)
    with telemetry_with(sink, stderr_sink=True) as cap:
        cap.telemetry.log("INFO", "gateway", "Request completed")
        assert errors(cap) == {("LevelFileSink", "ENOSPC"): 1}  # counted either way
    sink.close()
    assert capfd.readouterr().err.count('"message":"Request completed"') == copies


def test_a_log_folder_replaced_by_a_file_degrades_and_recovers(tmp_path: Path, clock: FakeClock,
                                                               recheck_every_write: None) -> None:
    root = tmp_path / "logs"
    fallback = io.BytesIO()
    sink = LevelFileSink(root, clock=clock, fallback=fallback)
    with telemetry_with(sink) as cap:
        cap.telemetry.log("INFO", "gateway", "one")
        os.rename(root, tmp_path / "moved")
        root.write_bytes(b"not a folder")
        cap.telemetry.log("INFO", "gateway", "two")  # must not raise
        cap.telemetry.log("INFO", "gateway", "three")
        assert errors(cap) == {("LevelFileSink", "ENOTDIR"): 2}
        root.unlink()
        cap.telemetry.log("INFO", "gateway", "four")  # the folder is back: files again
        assert errors(cap) == {("LevelFileSink", "ENOTDIR"): 2}
    sink.close()
    assert [orjson.loads(x)["message"] for x in fallback.getvalue().splitlines()] == ["two", "three"]
    assert [orjson.loads(x)["message"] for x in (tmp_path / "moved" / "info" / "info.log").read_bytes().splitlines()] \
        == ["one"]
    assert [orjson.loads(x)["message"] for x in (root / "info" / "info.log").read_bytes().splitlines()] == ["four"]


def test_a_folder_replaced_by_another_is_locked_by_its_new_lock_file(tmp_path: Path, clock: FakeClock,
                                                                    recheck_every_write: None) -> None:
    root = tmp_path / "logs"
    old = LevelFileSink(root, clock=clock)  # a process that opened the lock file before the swap
    old.write(b"one\n", "INFO", "x")
    os.rename(root, tmp_path / "moved")
    new = LevelFileSink(root, clock=clock)  # a process started after it
    new.write(b"two\n", "INFO", "x")
    lock = os.open(root / "info" / ".info.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as a rotation in the new folder would
    done = threading.Event()

    def write_three() -> None:
        old.write(b"three\n", "INFO", "x")
        done.set()

    writer = threading.Thread(target=write_three)
    writer.start()
    try:
        assert not done.wait(0.3), "the old process appended without the new folder's lock"
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    assert done.wait(10)
    writer.join()
    old.close()
    new.close()
    assert (root / "info" / "info.log").read_bytes() == b"two\nthree\n"
    assert (tmp_path / "moved" / "info" / "info.log").read_bytes() == b"one\n"


def test_a_log_root_that_cannot_be_created(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "file").write_bytes(b"")
    fallback = io.BytesIO()
    sink = LevelFileSink(tmp_path / "file" / "logs", clock=clock, fallback=fallback)
    with telemetry_with(sink) as cap:
        cap.telemetry.log("WARN", "gateway", "nowhere to go")
        [(key, count)] = errors(cap).items()
        assert key[0] == "LevelFileSink" and count == 1
    sink.close()
    assert orjson.loads(fallback.getvalue())["message"] == "nowhere to go"


def test_an_active_file_removed_by_hand_is_recreated(tmp_path: Path, clock: FakeClock,
                                                     recheck_every_write: None) -> None:
    sink = LevelFileSink(tmp_path, clock=clock)
    sink.write(b"one\n", "INFO", "x")
    sink.write(b"two\n", "INFO", "x")
    (tmp_path / "info" / "info.log").unlink()
    sink.write(b"three\n", "INFO", "x")
    sink.close()
    assert (tmp_path / "info" / "info.log").read_bytes() == b"three\n"

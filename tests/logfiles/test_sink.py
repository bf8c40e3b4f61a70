"""LevelFileSink: routing, midnight and size rotation, gzip, retention cleanup, background work."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from clawdbot_otel.logfiles import RETENTION_POLICY, LevelFileSink, _maintenance, default_log_dir, prune
from clawdbot_otel.logfiles._maintenance import MaintenanceWorker
from clawdbot_otel.logfiles._policy import destination_dirs
from clawdbot_otel.testing import capture_telemetry

from .conftest import FakeClock, read_lines, rotated_files, utc_ns


def line(n: int, pad: int = 0) -> bytes:
    return orjson.dumps({"n": n, "pad": "x" * pad}) + b"\n"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def sink(tmp_path: Path, clock: FakeClock) -> Iterator[LevelFileSink]:
    s = LevelFileSink(tmp_path, clock=clock, max_bytes=1_000)
    # The start-up sweep reads the clock too: let it finish before a test sets the clock back days
    # (to the sink, a clock that went back, and a reason to rotate).
    assert s.flush()
    yield s
    s.close()


# --- routing -------------------------------------------------------------------------------------
def test_each_level_goes_to_its_own_folder_only(tmp_path: Path, sink: LevelFileSink) -> None:
    for level in ("DEBUG", "INFO", "WARN", "ERROR", "FATAL"):
        sink.write(f"{level}\n".encode(), level, "gateway")
    sink.write(b"audit-info\n", "INFO", "audit")
    sink.write(b"audit-warn\n", "WARN", "audit")
    assert read_lines(tmp_path / "debug") == [b"DEBUG"]
    assert read_lines(tmp_path / "info") == [b"INFO"]
    assert read_lines(tmp_path / "error") == [b"WARN", b"ERROR"]
    assert read_lines(tmp_path / "archive") == [b"FATAL"]
    assert read_lines(tmp_path / "audit") == [b"audit-info", b"audit-warn"]
    assert sink.path_for("WARN") == tmp_path / "error" / "error.log"
    assert sink.path_for("DEBUG", "audit") == tmp_path / "audit" / "audit.log"


def test_unknown_level_is_filed_with_info(tmp_path: Path, sink: LevelFileSink) -> None:
    sink.write(b"odd\n", "NOTICE", "gateway")
    assert read_lines(tmp_path / "info") == [b"odd"]


def test_pipeline_records_reach_their_folders(tmp_path: Path, clock: FakeClock) -> None:
    sink = LevelFileSink(tmp_path, clock=clock)
    with capture_telemetry(clock=clock) as cap:
        cap.telemetry.bind(cap.telemetry.meter_provider, cap.telemetry.tracer_provider,
                           cap.telemetry.logger_provider, log_sinks=[sink])
        cap.telemetry.log("ERROR", "scheduler", "Job failed", metadata={"job_name": "coordinator"})
        cap.telemetry.log("DEBUG", "session", "tool call")
    [record] = [orjson.loads(x) for x in read_lines(tmp_path / "error")]
    assert record["component"] == "scheduler"
    assert record["metadata"] == {"job_name": "coordinator"}
    assert [orjson.loads(x)["message"] for x in read_lines(tmp_path / "debug")] == ["tool call"]
    sink.close()


def test_files_and_folders_are_private(tmp_path: Path, sink: LevelFileSink) -> None:
    sink.write(b"x\n", "INFO", "gateway")
    assert (tmp_path / "info").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "info" / "info.log").stat().st_mode & 0o777 == 0o600


def test_default_log_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_log_dir({"CLAWDBOT_OTEL_LOG_DIR": str(tmp_path)}) == tmp_path
    assert default_log_dir({"CLAWDBOT_OTEL_LOG_DIR": "~/x"}) == Path.home() / "x"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_log_dir({}) == tmp_path / "state" / "clawdbot-otel" / "logs"
    monkeypatch.setenv("CLAWDBOT_OTEL_LOG_DIR", str(tmp_path / "env"))
    s = LevelFileSink(clock=FakeClock())
    assert s.dirs["audit"] == tmp_path / "env" / "audit"
    s.close()


def test_a_destination_can_live_elsewhere(tmp_path: Path, clock: FakeClock) -> None:
    s = LevelFileSink(tmp_path / "root", directories={"debug": tmp_path / "volatile"}, clock=clock)
    s.write(b"d\n", "DEBUG", "x")
    assert (tmp_path / "volatile" / "debug.log").read_bytes() == b"d\n"
    s.close()
    with pytest.raises(ValueError, match=r"unknown log destination.*use one of debug, info"):
        LevelFileSink(tmp_path, directories={"trace": tmp_path})


# --- rotation ------------------------------------------------------------------------------------
def test_rotates_at_midnight_utc_and_gzips(tmp_path: Path, clock: FakeClock, sink: LevelFileSink) -> None:
    clock.set("2026-02-24T23:59:59")
    sink.write(b"before midnight\n", "INFO", "gateway")
    clock.set("2026-02-25T00:00:00")
    sink.write(b"after midnight\n", "INFO", "gateway")
    assert sink.flush()
    folder = tmp_path / "info"
    assert [p.name for p in rotated_files(folder)] == ["info.2026-02-24.0001.log.gz"]
    with gzip.open(folder / "info.2026-02-24.0001.log.gz", "rb") as f:
        assert f.read() == b"before midnight\n"
    assert (folder / "info.log").read_bytes() == b"after midnight\n"
    assert not (folder / "info.2026-02-24.0001.log").exists()  # the uncompressed original is gone


def test_no_rotation_within_the_day_under_the_size_limit(tmp_path: Path, clock: FakeClock,
                                                        sink: LevelFileSink) -> None:
    clock.set("2026-02-24T00:00:00")
    sink.write(b"first\n", "INFO", "gateway")
    clock.set("2026-02-24T23:59:59")
    sink.write(b"last\n", "INFO", "gateway")
    assert sink.flush()
    assert rotated_files(tmp_path / "info") == []


def test_a_quiet_day_rotates_at_the_next_write(tmp_path: Path, clock: FakeClock, sink: LevelFileSink) -> None:
    clock.set("2026-02-20T10:00:00")
    sink.write(b"old\n", "ERROR", "gateway")
    clock.set("2026-02-24T10:00:00")
    sink.write(b"new\n", "ERROR", "gateway")
    assert sink.flush()
    assert [p.name for p in rotated_files(tmp_path / "error")] == ["error.2026-02-20.0001.log.gz"]


def test_rotates_at_the_size_limit(tmp_path: Path, clock: FakeClock, sink: LevelFileSink) -> None:
    lines = [line(i, pad=80) for i in range(100)]  # ~100 bytes each, limit 1,000 bytes
    for x in lines:
        sink.write(x, "WARN", "gateway")
    assert sink.flush()
    folder = tmp_path / "error"
    rotated = rotated_files(folder)
    assert len(rotated) == 9  # 10 lines of 98 bytes per file
    assert [p.name for p in rotated[:2]] == ["error.2026-02-24.0001.log.gz", "error.2026-02-24.0002.log.gz"]
    for path in rotated:
        assert path.name.endswith(".gz")
        # one writer: full, never over (several processes can overshoot, see test_multiprocess)
        assert 1_000 - 98 < len(gzip.decompress(path.read_bytes())) <= 1_000
    assert read_lines(folder) == [x.rstrip(b"\n") for x in lines]  # every line once, in order


def test_sequence_continues_after_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    first = LevelFileSink(tmp_path, clock=clock, max_bytes=10)
    for i in range(3):
        first.write(f"line {i}\n".encode(), "INFO", "x")
    first.close()
    second = LevelFileSink(tmp_path, clock=clock, max_bytes=10)
    second.write(b"line 3\n", "INFO", "x")
    second.close()
    assert [p.name.split(".")[2] for p in rotated_files(tmp_path / "info")] == ["0001", "0002", "0003"]
    assert read_lines(tmp_path / "info") == [b"line 0", b"line 1", b"line 2", b"line 3"]


def test_a_clock_that_went_back_more_than_a_day_re_dates(tmp_path: Path, clock: FakeClock,
                                                          sink: LevelFileSink) -> None:
    clock.set("2030-01-01T12:00:00")  # a clock that jumped ahead, then was corrected
    sink.write(b"future\n", "INFO", "x")
    clock.set("2026-02-24T12:00:00")
    sink.write(b"back\n", "INFO", "x")
    clock.set("2026-02-25T00:00:01")
    sink.write(b"next day\n", "INFO", "x")
    assert sink.flush()
    folder = tmp_path / "info"
    # dated by the clock, not by the future day, so they expire by policy
    assert [p.name for p in rotated_files(folder)] == ["info.2026-02-24.0001.log.gz", "info.2026-02-24.0002.log.gz"]
    assert read_lines(folder) == [b"future", b"back", b"next day"]
    assert len(prune(tmp_path, now_ns=utc_ns("2026-03-10T00:00:00"))) == 3  # the active file's too
    assert read_lines(folder) == []


def test_a_clock_a_little_behind_keeps_the_files_day(tmp_path: Path, clock: FakeClock) -> None:
    s = LevelFileSink(tmp_path, clock=clock, max_bytes=10)
    clock.set("2026-02-25T00:00:01")
    s.write(b"first\n", "INFO", "x")
    clock.set("2026-02-24T23:59:59")  # another process's read, a moment earlier
    s.write(b"second\n", "INFO", "x")  # size rotation: still dated by the file's day
    s.write(b"third\n", "INFO", "x")
    s.close()
    assert [p.name for p in rotated_files(tmp_path / "info")] == ["info.2026-02-25.0001.log.gz",
                                                                 "info.2026-02-25.0002.log.gz"]


def test_an_active_file_without_recorded_state_is_dated_by_its_mtime(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "info"
    folder.mkdir()
    (folder / "info.log").write_bytes(b"left by an older version\n")
    two_days_ago = (clock() - 2 * 86_400 * 10**9) / 1e9
    os.utime(folder / "info.log", (two_days_ago, two_days_ago))
    s = LevelFileSink(tmp_path, clock=clock)
    s.write(b"today\n", "INFO", "x")
    s.close()
    assert [p.name for p in rotated_files(folder)] == ["info.2026-02-22.0001.log.gz"]
    assert read_lines(folder) == [b"left by an older version", b"today"]


def test_compression_never_runs_on_the_callers_thread(tmp_path: Path, clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = _maintenance.compress

    def recording(path: Path, compresslevel: int = 6) -> Path | None:
        threads.append(threading.current_thread().name)
        return real(path, compresslevel)

    monkeypatch.setattr(_maintenance, "compress", recording)
    s = LevelFileSink(tmp_path, clock=clock, max_bytes=10)
    for i in range(5):
        s.write(f"line {i}\n".encode(), "INFO", "x")
    assert s.flush()
    s.close()
    assert len(threads) == 4
    assert set(threads) == {"clawdbot-otel-logfiles"}


# --- retention -----------------------------------------------------------------------------------
def make_rotated(folder: Path, day: str, seq: int = 1, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{folder.name}.{day}.{seq:04d}.log{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(b"x\n") if gz else b"x\n")
    return path


def test_prune_removes_files_past_their_levels_retention(tmp_path: Path) -> None:
    now = utc_ns("2026-03-01T12:00:00")
    # A file of day D holds lines up to the end of D: it goes once `end of D + retention` has passed.
    expired = [
        make_rotated(tmp_path / "debug", "2026-02-27"),          # ended 02-28 00:00, +24h = 03-01 00:00
        make_rotated(tmp_path / "info", "2026-02-21"),           # ended 02-22, +7d = 03-01 00:00
        make_rotated(tmp_path / "error", "2026-01-29"),          # ended 01-30, +30d = 03-01 00:00
        make_rotated(tmp_path / "archive", "2025-11-30"),        # ended 12-01, +90d = 03-01 00:00
        make_rotated(tmp_path / "audit", "2025-02-28"),          # ended 03-01-2025, +365d = 03-01 00:00
    ]
    kept = [
        make_rotated(tmp_path / "debug", "2026-02-28"),
        make_rotated(tmp_path / "info", "2026-02-22"),
        make_rotated(tmp_path / "error", "2026-01-30"),
        make_rotated(tmp_path / "archive", "2025-12-01"),
        make_rotated(tmp_path / "audit", "2025-03-01"),
        tmp_path / "info" / "notes.2026-02-10.0001.log",  # not ours: another stem
        tmp_path / "info" / "info.log",  # the active file
    ]
    for path in kept[-2:]:
        path.write_bytes(b"x\n")

    listed = prune(tmp_path, now_ns=now, dry_run=True)
    assert sorted(f.path for f in listed) == sorted(expired)
    assert all(p.exists() for p in expired)  # dry run removes nothing

    removed = prune(tmp_path, now_ns=now)
    assert sorted(f.path for f in removed) == sorted(expired)
    assert not any(p.exists() for p in expired)
    assert all(p.exists() for p in kept)


def test_the_sinks_cleanup_spares_audit_for_the_annual_review(tmp_path: Path, clock: FakeClock) -> None:
    clock.set("2027-06-01T00:00:00")
    old_debug = make_rotated(tmp_path / "debug", "2026-01-01")
    old_audit = make_rotated(tmp_path / "audit", "2026-01-01")
    s = LevelFileSink(tmp_path, clock=clock)  # sweeps at start
    assert s.flush()
    s.close()
    assert not old_debug.exists()
    assert old_audit.exists()
    assert [f.path for f in prune(tmp_path, now_ns=clock())] == [old_audit]


def test_cleanup_runs_after_a_rotation(tmp_path: Path, clock: FakeClock, sink: LevelFileSink) -> None:
    clock.set("2026-02-24T23:00:00")
    sink.write(b"a\n", "DEBUG", "x")
    assert sink.flush()
    stale = make_rotated(tmp_path / "debug", "2026-02-23")  # appears later, e.g. from another process
    clock.set("2026-02-25T00:00:01")  # midnight: rotation, then a sweep
    sink.write(b"b\n", "DEBUG", "x")
    assert sink.flush()
    assert not stale.exists()
    assert [p.name for p in rotated_files(tmp_path / "debug")] == ["debug.2026-02-24.0001.log.gz"]


def test_a_sweep_compresses_what_an_exited_process_left(tmp_path: Path, clock: FakeClock) -> None:
    orphan = make_rotated(tmp_path / "info", "2026-02-24", gz=False)
    an_hour_ago = time.time() - 3_600  # mtimes come from the real clock, whatever the sink's clock says
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    crash_leftover = tmp_path / "info" / ".info.2026-02-24.0002.log.gz.123-4.tmp"
    crash_leftover.write_bytes(b"partial")
    os.utime(crash_leftover, (an_hour_ago - 60, an_hour_ago - 60))
    s = LevelFileSink(tmp_path, clock=clock)
    assert s.flush()
    s.close()
    assert not orphan.exists()
    assert gzip.decompress(orphan.with_name(orphan.name + ".gz").read_bytes()) == b"x\n"
    assert not crash_leftover.exists()


def test_the_sweeps_thresholds_use_the_clock_that_stamps_mtimes(tmp_path: Path, clock: FakeClock) -> None:
    now_s = 1_900_000_000.0  # the sweep's mtime clock: far from both the fake clock and the real one
    folder = tmp_path / "info"

    def aged(path: Path, age_s: float) -> Path:
        os.utime(path, (now_s - age_s, now_s - age_s))
        return path

    orphan = aged(make_rotated(folder, "2026-02-24", seq=1, gz=False), 61)
    live = aged(make_rotated(folder, "2026-02-24", seq=2, gz=False), 59)  # its writer compresses it now
    stale_tmp = folder / ".info.2026-02-24.0003.log.gz.1-1.tmp"
    fresh_tmp = folder / ".info.2026-02-24.0004.log.gz.1-1.tmp"
    for tmp in (stale_tmp, fresh_tmp):
        tmp.write_bytes(b"partial")
    aged(stale_tmp, 3_601)
    aged(fresh_tmp, 3_599)  # a compression in progress
    worker = MaintenanceWorker(destination_dirs(tmp_path), RETENTION_POLICY, clock, mtime_clock=lambda: now_s)
    worker.sweep_later()
    assert worker.close()
    assert not orphan.exists() and orphan.with_name(orphan.name + ".gz").exists()
    assert live.exists() and not live.with_name(live.name + ".gz").exists()
    assert not stale_tmp.exists()
    assert fresh_tmp.exists()


# --- quiet destinations --------------------------------------------------------------------------
def test_a_quiet_active_file_is_rotated_by_the_periodic_sweep_then_expires(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_maintenance, "_SWEEP_INTERVAL_S", 0.02)
    s = LevelFileSink(tmp_path, clock=clock)
    s.write(b"the only debug line\n", "DEBUG", "x")
    folder = tmp_path / "debug"
    rotated = folder / "debug.2026-02-24.0001.log.gz"
    clock.set("2026-02-25T00:00:01")  # nothing written: no write rotates it, only a sweep
    assert wait_until(rotated.exists)
    assert (folder / "debug.log").read_bytes() == b""
    assert gzip.decompress(rotated.read_bytes()) == b"the only debug line\n"
    clock.set("2026-02-26T00:00:00")  # end of its day + 24 h
    assert wait_until(lambda: not rotated.exists())
    assert read_lines(folder) == []
    worker = s._worker
    s.close()
    assert wait_until(lambda: worker._thread is None), "close() ends the periodic sweeps"


def test_prune_rotates_quiet_active_files(tmp_path: Path, clock: FakeClock) -> None:
    s = LevelFileSink(tmp_path, clock=clock)
    s.write(b"debug on day 1\n", "DEBUG", "x")
    s.write(b"info on day 1\n", "INFO", "x")
    s.write(b"", "ERROR", "x")  # an empty active file: nothing to rotate
    s.close()
    weeks_later = utc_ns("2026-03-03T12:00:00")  # debug (24 h) expired, info (7 days) not yet
    debug_log = tmp_path / "debug" / "debug.log"

    [listed] = prune(tmp_path, now_ns=weeks_later, dry_run=True)
    assert (listed.path, listed.day, listed.size_bytes) == (debug_log, "2026-02-24", 15)
    assert debug_log.read_bytes() == b"debug on day 1\n"  # a dry run changes nothing
    assert rotated_files(tmp_path / "info") == []

    [removed] = prune(tmp_path, now_ns=weeks_later)
    assert removed.path == tmp_path / "debug" / "debug.2026-02-24.0001.log"
    assert not removed.path.exists()
    assert read_lines(tmp_path / "debug") == []
    assert [p.name for p in rotated_files(tmp_path / "info")] == ["info.2026-02-24.0001.log.gz"]  # kept, compressed
    assert read_lines(tmp_path / "info") == [b"info on day 1"]
    assert rotated_files(tmp_path / "error") == []


def test_prune_skips_compression_temporaries(tmp_path: Path) -> None:
    in_progress = tmp_path / "debug" / ".debug.2020-01-01.0001.log.gz.123-4.tmp"
    in_progress.parent.mkdir()
    in_progress.write_bytes(b"partial")
    assert prune(tmp_path, now_ns=utc_ns("2026-03-01T00:00:00")) == []
    assert in_progress.exists()


def test_policy_matches_the_design() -> None:
    table = {row.destination: (row.levels, row.component, row.retention_hours) for row in RETENTION_POLICY}
    assert table == {
        "debug": (("DEBUG",), None, 24),
        "info": (("INFO",), None, 7 * 24),
        "error": (("WARN", "ERROR"), None, 30 * 24),
        "archive": (("FATAL",), None, 90 * 24),
        "audit": ((), "audit", 365 * 24),
    }

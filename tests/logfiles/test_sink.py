"""LevelFileSink: routing, midnight and size rotation, gzip, retention cleanup, background work."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from clawdbot_otel.logfiles import RETENTION_POLICY, LevelFileSink, _maintenance, default_log_dir, prune
from clawdbot_otel.testing import capture_telemetry

from .conftest import FakeClock, read_lines, rotated_files, utc_ns


def line(n: int, pad: int = 0) -> bytes:
    return orjson.dumps({"n": n, "pad": "x" * pad}) + b"\n"


@pytest.fixture
def sink(tmp_path: Path, clock: FakeClock) -> Iterator[LevelFileSink]:
    s = LevelFileSink(tmp_path, clock=clock, max_bytes=1_000)
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
        assert 1_000 - 98 < len(gzip.decompress(path.read_bytes())) <= 1_000  # full, never over
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
    an_hour_ago = clock() / 1e9 - 3_600
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


def test_policy_matches_the_design() -> None:
    table = {row.destination: (row.levels, row.component, row.retention_hours) for row in RETENTION_POLICY}
    assert table == {
        "debug": (("DEBUG",), None, 24),
        "info": (("INFO",), None, 7 * 24),
        "error": (("WARN", "ERROR"), None, 30 * 24),
        "archive": (("FATAL",), None, 90 * 24),
        "audit": ((), "audit", 365 * 24),
    }

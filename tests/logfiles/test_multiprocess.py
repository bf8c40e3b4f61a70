"""Several processes appending to and rotating the same folders: every line exactly once."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import warnings
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path

import orjson

from clawdbot_otel.logfiles import LevelFileSink
from clawdbot_otel.logfiles._rotation import parse_rotated

from .conftest import FakeClock, read_lines, rotated_files

PROCESSES = 4
LINES = 5_000
MAX_BYTES = 8_192  # ~90 lines of ~90 bytes: over a hundred rotations per folder


def _writer(log_dir: str, proc: int, start: Event) -> None:
    # 12 ms of fake time per line from 23:59:30: each process crosses midnight UTC at its line 2,500.
    clock = FakeClock("2026-02-24T23:59:30")
    sink = LevelFileSink(log_dir, clock=clock, max_bytes=MAX_BYTES)
    start.wait()
    for i in range(LINES):
        record = {"p": proc, "i": i, "pad": "x" * 60}
        sink.write(orjson.dumps(record) + b"\n", "INFO" if i % 2 else "ERROR", "gateway")
        clock.advance(0.012)
    sink.close(timeout_s=60)


def test_concurrent_writers_lose_and_repeat_nothing_across_rotations(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter each, as separate gateways would be
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, start)) for p in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    seen: Counter[tuple[int, int]] = Counter()
    for folder in (tmp_path / "info", tmp_path / "error"):
        rotated = rotated_files(folder)
        assert len(rotated) > 100
        assert all(p.name.endswith(".log.gz") for p in rotated), "every rotated file is compressed"
        longest = max(len(x) + 1 for x in read_lines(folder))
        for path in rotated:
            # The size check is made under the shared lock: each other writer may add one line.
            assert len(gzip.decompress(path.read_bytes())) <= MAX_BYTES + (PROCESSES - 1) * longest
        days = {parse_rotated(p.name).day for p in rotated}  # type: ignore[union-attr]
        assert len(days) == 2, "rotated on both sides of midnight UTC"
        leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []
        last_by_proc: dict[int, int] = {}
        for raw in read_lines(folder):
            record = orjson.loads(raw)
            key = (record["p"], record["i"])
            seen[key] += 1
            # each process's lines stay in order across rotations
            assert record["i"] > last_by_proc.get(record["p"], -1)
            last_by_proc[record["p"]] = record["i"]
    assert len(seen) == PROCESSES * LINES
    assert set(seen.values()) == {1}


def test_a_sink_inherited_across_fork_keeps_working_in_both(tmp_path: Path) -> None:
    sink = LevelFileSink(tmp_path, max_bytes=2_048, clock=FakeClock())
    sink.write(b'{"p":0,"i":-1}\n', "INFO", "x")  # descriptors, lock and worker exist before the fork
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a process with threads
        pid = os.fork()
    if pid == 0:  # the child: its own descriptors and lock, then exit without running the parent's atexit
        code = 1
        try:
            for i in range(500):
                sink.write(orjson.dumps({"p": 1, "i": i}) + b"\n", "INFO", "x")
            code = 0 if sink.flush(30) else 2
        finally:
            os._exit(code)
    for i in range(500):
        sink.write(orjson.dumps({"p": 0, "i": i}) + b"\n", "INFO", "x")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sink.close()
    records = Counter((r["p"], r["i"]) for r in map(orjson.loads, read_lines(tmp_path / "info")))
    assert len(records) == 1_001 and set(records.values()) == {1}

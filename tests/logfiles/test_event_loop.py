"""An asyncio loop logging through LevelFileSink while another process keeps rotating the same folder.

The design's requirement: the log path never blocks the event loop for file I/O longer than a single
write. What is asserted is what must hold on any machine (the loop kept running, every line of both
processes is there exactly once); the stalls measured are printed (`pytest -s`), not asserted, because
on a shared machine they measure the scheduler as much as the sink.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path

import orjson

from clawdbot_otel.logfiles import LevelFileSink

from .conftest import FakeClock, read_lines, rotated_files

MAX_BYTES = 2_048  # ~25 lines of ~80 bytes: a rotation every few milliseconds
LOOP_LINES = 2_000
ROTATOR_WARMUP_LINES = 200


def _rotator(log_dir: str, started: Event, stop: Event) -> None:
    sink = LevelFileSink(log_dir, clock=FakeClock(), max_bytes=MAX_BYTES)
    i = 0
    while not stop.is_set():
        sink.write(orjson.dumps({"p": 1, "i": i, "pad": "y" * 50}) + b"\n", "INFO", "gateway")
        i += 1
        if i == ROTATOR_WARMUP_LINES:
            started.set()
        time.sleep(0.0002)  # still a rotation every ~5 ms, without queueing thousands of compressions
    sink.close(timeout_s=120)


async def _log_while_ticking(sink: LevelFileSink) -> tuple[list[float], list[float]]:
    """(gaps between the ticker's 1 ms wake-ups, duration of each sink.write), in seconds."""
    gaps: list[float] = []
    writes: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def logger() -> None:
        for i in range(LOOP_LINES):
            line = orjson.dumps({"p": 0, "i": i, "pad": "x" * 50}) + b"\n"
            start = time.perf_counter()
            sink.write(line, "INFO", "gateway")  # on the loop's thread, as the pipeline calls it
            writes.append(time.perf_counter() - start)
            await asyncio.sleep(0.0005)
        done.set()

    await asyncio.gather(ticker(), logger())
    return gaps, writes


def test_the_loop_keeps_ticking_while_another_process_rotates(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    started, stop = ctx.Event(), ctx.Event()
    rotator = ctx.Process(target=_rotator, args=(str(tmp_path), started, stop))
    rotator.start()
    try:
        assert started.wait(60), "the rotating process did not start"
        sink = LevelFileSink(tmp_path, clock=FakeClock(), max_bytes=MAX_BYTES)
        began = time.perf_counter()
        gaps, writes = asyncio.run(_log_while_ticking(sink))
        elapsed = time.perf_counter() - began
        sink.close(timeout_s=120)
    finally:
        stop.set()
        rotator.join(timeout=180)
    assert rotator.exitcode == 0

    ordered = sorted(writes)
    print(  # the measurement, for `pytest -s`
        f"\n{LOOP_LINES} lines in {elapsed:.2f}s beside a rotating process: longest loop stall "
        f"{(max(gaps) - 0.001) * 1e3:.2f} ms over {len(gaps)} ticks; sink.write p50 {ordered[len(ordered) // 2] * 1e6:.0f} us, "
        f"p99 {ordered[len(ordered) * 99 // 100] * 1e6:.0f} us, max {ordered[-1] * 1e3:.2f} ms"
    )
    assert len(gaps) >= LOOP_LINES // 10, "the loop stopped ticking while it logged"
    folder = tmp_path / "info"
    assert len(rotated_files(folder)) > 50, "the other process rotated the folder throughout"
    seen = Counter((r["p"], r["i"]) for r in map(orjson.loads, read_lines(folder)))
    assert set(seen.values()) == {1}, "a line was lost or repeated"
    assert {i for p, i in seen if p == 0} == set(range(LOOP_LINES))
    rotator_lines = {i for p, i in seen if p == 1}
    assert rotator_lines == set(range(len(rotator_lines)))

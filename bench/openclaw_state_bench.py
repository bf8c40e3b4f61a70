"""Cost of the OpenClaw state reader: its CPU per poll, and the lock waits a writer (the gateway) sees.

    .venv/bin/python bench/openclaw_state_bench.py --openclaw-state ~/.openclaw --duration 10

A consistent copy of the OpenClaw state folder is made (SQLite backup API, source opened read-only; the
live gateway is never written), optionally padded with `--pad` copies of its run receipts and task rows.
Then, on the copy, a writer in a child process does what the gateway does when a run finishes: one short
write transaction (`BEGIN IMMEDIATE`, insert a finished receipt and a task row, `COMMIT`, busy timeout
5 s) every `--write-every-ms`. Twice: alone, then while `OpenClawStateWatcher` polls every `--poll-s`.
Reported: the writer's transaction time and its wait for the write lock (`BEGIN IMMEDIATE`) p50/p99/max in
both runs (the lock wait's max is the worst lock wait the gateway would see; the transaction time also
shows CPU contention on a small machine), and the watcher's CPU per poll (thread CPU time) while runs arrive and when idle.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from clawdbot_otel.collect import OpenClawStateWatcher
from clawdbot_otel.testing import capture_telemetry

_WRITER = r"""
import sqlite3, sys, time, uuid
db, duration, every = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) / 1000
conn = sqlite3.connect(db, timeout=5.0, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 5000")
job_id = conn.execute("SELECT job_id FROM cron_jobs LIMIT 1").fetchone()[0]
waits, locks = [], []
end = time.monotonic() + duration
while time.monotonic() < end:
    now_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    locks.append(time.perf_counter() - t0)
    conn.execute("INSERT INTO cron_run_receipts (receipt_id, store_key, job_id, config_revision, agent_id, "
                 "request_run_id, status, owner_pid, started_at_ms, finished_at_ms) VALUES "
                 "(?, 'bench', ?, 'bench', 'main', ?, 'ok', 1, ?, ?)",
                 (str(uuid.uuid4()), job_id, "bench:" + str(uuid.uuid4()), now_ms - 5, now_ms))
    conn.execute("INSERT INTO task_runs (task_id, runtime, owner_key, scope_kind, task, status, delivery_status, "
                 "notify_policy, created_at, started_at, ended_at) VALUES "
                 "(?, 'cron', '', 'system', 'bench', 'succeeded', 'not_applicable', 'silent', ?, ?, ?)",
                 (str(uuid.uuid4()), now_ms - 5, now_ms - 5, now_ms))
    conn.execute("COMMIT")
    waits.append(time.perf_counter() - t0)
    time.sleep(every)
print(" ".join(f"{w:.6f}" for w in waits))
print(" ".join(f"{w:.6f}" for w in locks))
"""


def _copy(source: Path, target: Path, pad: int) -> Path:
    for db in [source / "state" / "openclaw.sqlite", *source.glob("agents/*/agent/openclaw-agent.sqlite")]:
        dest = target / db.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        out = sqlite3.connect(dest)
        src.backup(out)
        src.close()
        out.execute("PRAGMA journal_mode = WAL")
        out.close()
    if pad:
        conn = sqlite3.connect(target / "state" / "openclaw.sqlite")
        for table in ("cron_run_receipts", "task_runs"):  # the first column is the id
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            marks = ",".join("?" * len(rows[0])) if rows else ""
            for _ in range(pad if rows else 0):
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", [(str(uuid.uuid4()), *r[1:]) for r in rows])
        conn.commit()
        conn.close()
    return target


def _writer(db: Path, duration_s: float, every_ms: float) -> tuple[list[float], list[float]]:
    """(whole transaction times, `BEGIN IMMEDIATE` times: the wait for the write lock), in seconds."""
    out = subprocess.run([sys.executable, "-c", _WRITER, str(db), str(duration_s), str(every_ms)],
                         capture_output=True, text=True, check=True)
    transactions, locks = out.stdout.splitlines()
    return [float(x) for x in transactions.split()], [float(x) for x in locks.split()]


def _summary(values_s: list[float]) -> str:
    ordered = sorted(values_s)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"n={len(ordered)} p50={statistics.median(ordered) * 1000:.3f} ms p99={p99 * 1000:.3f} ms "
            f"max={ordered[-1] * 1000:.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openclaw-state", required=True, type=Path, help="an OpenClaw state folder (copied)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default %(default)s)")
    parser.add_argument("--write-every-ms", type=float, default=5.0, help="writer pause (default %(default)s)")
    parser.add_argument("--poll-s", type=float, default=0.05, help="watcher poll interval (default %(default)s)")
    parser.add_argument("--pad", type=int, default=0, help="extra copies of the receipts and task rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openclaw-state-bench-") as tmp:
        folder = _copy(args.openclaw_state.expanduser(), Path(tmp) / "openclaw", args.pad)
        db = folder / "state" / "openclaw.sqlite"
        # A connection that stays open, as the running gateway's does: the WAL index (-shm) then exists, which
        # is what a reader of a live gateway meets (without it every read transaction rebuilds the index).
        keeper = sqlite3.connect(db)
        keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()
        cpu: list[float] = []
        stop = threading.Event()
        with capture_telemetry() as cap:
            watcher = OpenClawStateWatcher(cap.telemetry, folder, checkpoint=Path(tmp) / "ck.json", usage_settle_s=0)

            def poll() -> None:
                while not stop.is_set():
                    watcher.scan_once()
                    cpu.append(watcher.cpu_s_last_poll)
                    time.sleep(args.poll_s)

            watcher.scan_once()  # the history as copied
            quiet = []  # polls with nothing new over an ordinary history: the usual case
            for _ in range(50):
                watcher.scan_once()
                quiet.append(watcher.cpu_s_last_poll)
            alone = _writer(db, args.duration, args.write_every_ms)  # the reader not polling
            thread = threading.Thread(target=poll)
            thread.start()
            try:
                with_watcher = _writer(db, args.duration, args.write_every_ms)
            finally:
                stop.set()
                thread.join()
            idle = []  # nothing new, but the look-back window full of the writer's runs
            for _ in range(50):
                watcher.scan_once()
                idle.append(watcher.cpu_s_last_poll)
            busy = sum(p.value for p in cap.metric_points("clawdbot_otel.source_errors"))
            counted = watcher.counts
            watcher.close()
        keeper.close()
    print(f"writer transaction, alone:        {_summary(alone[0])}")
    print(f"writer transaction, with watcher: {_summary(with_watcher[0])}")
    print(f"writer lock wait (BEGIN IMMEDIATE), alone:        {_summary(alone[1])}")
    print(f"writer lock wait (BEGIN IMMEDIATE), with watcher: {_summary(with_watcher[1])}")
    print(f"watcher CPU per poll while the writer ran: {_summary(cpu)} (every {args.poll_s} s; reported "
          f"{counted['runs']} runs, {counted['tasks']} tasks; source errors {busy})")
    print(f"watcher CPU per poll, nothing new, ordinary history: {_summary(quiet)}")
    print(f"watcher CPU per poll, nothing new, look-back full of the writer's runs: {_summary(idle)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

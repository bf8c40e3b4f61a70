"""Compression of rotated files and removal of expired ones, off the logging caller's thread.

Compression of `info.2026-02-24.0001.log`: gzip into a hidden temporary beside it, fsync, rename
the temporary to `info.2026-02-24.0001.log.gz` (atomic: a reader sees the whole archive or none), then
unlink the `.log`. A rotated file is immutable (see `_rotation`), so no lock is needed; if two
processes compress the same file (a sweep after a crash), both produce the same archive and the
second rename and unlink are harmless.

Expiry is decided by the day in the file's name, not its mtime: a file of day D holds lines up to the
end of D, so it is removed once `now >= end of D + retention`. Every line is kept at least its
level's retention. An active file that nobody wrote to since its day ended is rotated first
(`RotatingLogFile.rotate_if_stale`), by the worker's sweep (at start, after each rotation and every
`_SWEEP_INTERVAL_S`) and by `prune`, so a quiet destination's lines expire too. Files whose names do
not follow the rotated pattern (the active file, the lock file, anything a person put there) are
never removed, and neither are compression temporaries (a sweep removes those a crash left).
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import logging
import os
import shutil
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._policy import RETENTION_POLICY, LogRetention, destination_dirs
from ._rotation import NS_PER_DAY, RotatingLogFile, format_day, parse_rotated

__all__ = ["MaintenanceWorker", "PrunedFile", "compress", "expired_files", "prune"]

_log = logging.getLogger("clawdbot_otel.logfiles")
_STALE_TEMPORARY_S = 3_600  # no compression takes an hour: a temporary that old was left by a crash
_ORPHAN_AFTER_S = 60  # the rotating process compresses its file at once; one older was left behind
# How often an idle worker sweeps: a quiet file is rotated, and expired files go, within this of midnight.
_SWEEP_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class PrunedFile:
    """A rotated file past its destination's retention (removed, or to be removed in a dry run)."""

    path: Path
    destination: str
    day: str
    size_bytes: int


def compress(path: Path, compresslevel: int = 6) -> Path | None:
    """gzip a rotated file to `<name>.gz` and remove it; None if another process already did."""
    target = path.with_name(path.name + ".gz")
    temporary = path.with_name(f".{target.name}.{os.getpid()}-{threading.get_native_id()}.tmp")
    try:
        source = open(path, "rb")  # noqa: SIM115 (closed below, after the rename)
    except FileNotFoundError:
        return None
    with source:
        mtime = int(os.fstat(source.fileno()).st_mtime)
        try:
            with open(temporary, "wb") as raw:
                with gzip.GzipFile(filename=target.name, mode="wb", compresslevel=compresslevel, fileobj=raw,
                                   mtime=mtime) as archive:
                    shutil.copyfileobj(source, archive, 1 << 20)
                raw.flush()
                os.fsync(raw.fileno())
            os.rename(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    path.unlink(missing_ok=True)
    return target


def _rotated_files(dirs: Mapping[str, Path]) -> Iterator[tuple[str, Path, int, bool, bool]]:
    """(destination, path, day, compressed, temporary) of every rotated file of each destination."""
    for destination, directory in dirs.items():
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            parsed = parse_rotated(entry.name)
            if parsed is not None and parsed.stem == destination:
                yield destination, Path(entry.path), parsed.day, parsed.compressed, parsed.temporary


def expired_files(
    dirs: Mapping[str, Path],
    now_ns: int,
    policy: tuple[LogRetention, ...] = RETENTION_POLICY,
    *,
    scheduled_only: bool = False,
) -> list[PrunedFile]:
    """Rotated files older than their destination's retention, oldest first."""
    rows = {row.destination: row for row in policy if row.scheduled_cleanup or not scheduled_only}
    out: list[PrunedFile] = []
    for destination, path, day, _compressed, temporary in _rotated_files(dirs):
        row = rows.get(destination)
        # A temporary may be a compression in progress: its rename would fail. The sweep removes stale ones.
        if temporary or row is None or not _expired(row, day, now_ns):
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        out.append(PrunedFile(path, destination, format_day(day), size))
    out.sort(key=_oldest_first)
    return out


def _expired(row: LogRetention, day: int, now_ns: int) -> bool:
    return now_ns >= (day + 1) * NS_PER_DAY + row.retention_ns


def _oldest_first(f: PrunedFile) -> tuple[str, str]:
    return f.day, str(f.path)


def prune(
    log_dir: str | Path | None = None,
    *,
    now_ns: int | None = None,
    dry_run: bool = False,
    directories: Mapping[str, str | Path] | None = None,
    policy: tuple[LogRetention, ...] = RETENTION_POLICY,
    scheduled_only: bool = False,
    on_removed: Callable[[PrunedFile], None] | None = None,
) -> list[PrunedFile]:
    """Remove (or, with `dry_run`, list) the files past their retention under `log_dir`, oldest first.

    Active files whose day is over are rotated first (compressed if they are not expired yet); a dry
    run rotates nothing and lists such a file by its active path. `on_removed` is called after each
    removal (each listing, in a dry run), so a caller can report what was done before an `OSError`
    stops the rest. `scheduled_only` skips destinations that only an explicit prune cleans (audit).
    """
    dirs = destination_dirs(log_dir, directories, policy)
    now = time.time_ns() if now_ns is None else now_ns
    rows = {row.destination: row for row in policy if row.scheduled_cleanup or not scheduled_only}
    # Unlimited size: prune rotates by day only, the size limit is the writers' business.
    files = [RotatingLogFile(dirs[destination], destination, sys.maxsize) for destination in rows]
    try:
        if dry_run:
            expired = expired_files(dirs, now, policy, scheduled_only=scheduled_only)
            expired += _stale_active_files(files, rows, now)
            expired.sort(key=_oldest_first)
            for pruned in expired:
                if on_removed is not None:
                    on_removed(pruned)
            return expired
        rotated = [path for path in (f.rotate_if_stale(now) for f in files) if path is not None]
    finally:
        for f in files:
            f.close()
    expired = expired_files(dirs, now, policy, scheduled_only=scheduled_only)
    removed = {pruned.path for pruned in expired}
    for path in rotated:
        if path not in removed:
            compress(path)
    for pruned in expired:
        pruned.path.unlink(missing_ok=True)  # another process may have pruned it first
        if on_removed is not None:
            on_removed(pruned)
    return expired


def _stale_active_files(
    files: Iterable[RotatingLogFile], rows: Mapping[str, LogRetention], now_ns: int
) -> list[PrunedFile]:
    """The active files that `prune` would rotate and then remove at once."""
    out: list[PrunedFile] = []
    for f in files:
        day = f.stale_day(now_ns)
        if day is None or not _expired(rows[f.stem], day, now_ns):
            continue
        with contextlib.suppress(FileNotFoundError):
            out.append(PrunedFile(f.path, f.stem, format_day(day), f.path.stat().st_size))
    return out


_WORKERS: weakref.WeakSet[MaintenanceWorker] = weakref.WeakSet()


class MaintenanceWorker:
    """One daemon thread per sink: compresses rotated files and sweeps expired ones, in submission order.

    A sweep first rotates `files` whose day is over (`rotate_if_stale`). It also compresses rotated
    `.log` files that a crashed or exited process left uncompressed (untouched for a minute: the
    rotating process compresses its own at once, so live files are not compressed twice) and removes
    compression temporaries such a process left behind. Besides the sweeps asked for, an idle worker
    sweeps every `_SWEEP_INTERVAL_S` until `close()`.

    `clock` (nanoseconds) decides days and expiry, like the sink's; `mtime_clock` (seconds) is the
    clock that stamps files' mtimes, which the orphan and temporary thresholds compare with.
    """

    def __init__(
        self,
        dirs: Mapping[str, Path],
        policy: tuple[LogRetention, ...],
        clock: Callable[[], int],
        compresslevel: int = 6,
        *,
        files: Iterable[RotatingLogFile] = (),
        mtime_clock: Callable[[], float] = time.time,
    ) -> None:
        self._dirs = dict(dirs)
        self._policy = policy
        self._clock = clock
        self._mtime_clock = mtime_clock
        self._files = tuple(files)
        self._compresslevel = compresslevel
        self._init_state()
        _WORKERS.add(self)

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._jobs: deque[Path] = deque()
        self._sweep_requested = False
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None

    def compress_later(self, path: Path) -> None:
        with self._cond:
            self._jobs.append(path)
            self._wake()

    def sweep_later(self) -> None:
        with self._cond:
            self._sweep_requested = True
            self._wake()

    def _wake(self) -> None:
        self._closing = False  # used again after close(): periodic sweeps resume
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="clawdbot-otel-logfiles", daemon=True)
            self._thread.start()
        self._cond.notify()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted job is done; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._jobs or self._sweep_requested or self._busy), timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Finish the submitted jobs (up to `timeout_s`), then end the thread and its periodic sweeps.

        A job submitted later starts a new thread. False if the jobs did not finish in time.
        """
        with self._cond:  # one hold: no periodic sweep can start between the wait and the flag
            idle = self._cond.wait_for(lambda: not (self._jobs or self._sweep_requested or self._busy), timeout_s)
            self._closing = True
            self._cond.notify_all()
        return idle

    def _run(self) -> None:
        while True:
            with self._cond:
                pending = self._cond.wait_for(lambda: bool(self._jobs or self._sweep_requested or self._closing),
                                              _SWEEP_INTERVAL_S)
                if not (self._jobs or self._sweep_requested):
                    if self._closing:
                        self._thread, self._closing = None, False
                        self._cond.notify_all()
                        return
                    if not pending:  # idle for a whole interval: the periodic sweep
                        self._sweep_requested = True
                self._busy = True
                job = self._jobs.popleft() if self._jobs else None
                if job is None:
                    self._sweep_requested = False
            try:
                if job is not None:
                    compress(job, self._compresslevel)
                else:
                    self._sweep()
            except Exception as exc:  # a failed compression or removal is retried by the next sweep
                _log.warning("clawdbot-otel log maintenance failed (%s): %s", job or "sweep", exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _sweep(self) -> None:
        now_ns = self._clock()
        for log_file in self._files:
            try:
                rotated = log_file.rotate_if_stale(now_ns)
                if rotated is not None:
                    compress(rotated, self._compresslevel)
            except OSError as exc:  # the writes report a broken folder; the next sweep tries again
                _log.warning("clawdbot-otel log maintenance could not rotate %s: %s", log_file.path, exc)
        now_s = self._mtime_clock()
        for _destination, path, _day, compressed, temporary in _rotated_files(self._dirs):
            try:
                if temporary:
                    if path.stat().st_mtime < now_s - _STALE_TEMPORARY_S:
                        path.unlink(missing_ok=True)
                elif not compressed and path.stat().st_mtime < now_s - _ORPHAN_AFTER_S:
                    compress(path, self._compresslevel)
            except FileNotFoundError:
                continue  # another process compressed or removed it meanwhile
        for pruned in expired_files(self._dirs, now_ns, self._policy, scheduled_only=True):
            pruned.path.unlink(missing_ok=True)

    def _after_fork_in_child(self) -> None:
        self._init_state()  # the thread did not survive the fork; the parent finishes its own jobs


def _reset_after_fork() -> None:
    for worker in list(_WORKERS):
        worker._after_fork_in_child()


def _drain_at_exit(timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    for worker in list(_WORKERS):
        worker.wait_idle(max(0.0, deadline - time.monotonic()))


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_drain_at_exit)

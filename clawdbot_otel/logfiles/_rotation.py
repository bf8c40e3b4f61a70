"""One log file that several processes append to and rotate together, without losing or repeating a line.

Why not `logging.handlers.TimedRotatingFileHandler` / `RotatingFileHandler`: each process decides and
performs its own rollover. With two processes on one file, both rename the active file at midnight
(the second rename moves the first process's fresh file over, or `RotatingFileHandler` deletes a
rotated file to make room), and a process that has not rolled over keeps appending to a file that was
already renamed and may be compressed and deleted under it. Their buffered text streams can also
split a long line into several writes, which interleave with other processes' lines.

The scheme here, per destination folder (`info/`, ...):

* `info.log` is the active file. Each process holds its own descriptor opened with `O_APPEND` and
  writes each line with a single `os.write` (the kernel appends it whole, at the end, even with other
  writers).
* `.info.lock` is never renamed. It holds, in a small shared memory map, the active file's day,
  inode, next sequence number and a generation number that every rotation bumps. Every write happens
  under a shared `flock` on it, after checking that the generation is the one this process last saw
  (a memory read; on a change it `stat`s `info.log` and reopens if the inode differs). Rotation
  happens only under the exclusive lock, so once a rotation's rename has returned, no process can
  append to the renamed file any more: a rotated file is complete and immutable, and the background
  compressor may gzip and delete it without a lock.
* Rotation is needed when the clock's UTC day is past the active file's day (midnight UTC) or when
  the line would take the file past `max_bytes` (the size is the descriptor's end offset). The
  process that sees it takes the exclusive lock, checks again (another process may have rotated
  first: then it only reopens), renames the file to `info.<YYYY-MM-DD>.<seq>.log` (the file's own
  day, the first free sequence number), creates the new active file and records it in the lock file.
  Day and size decisions therefore come from shared state, not from each process's memory, and the
  clock is injectable (tests drive midnight without waiting for it). A clock read up to a day behind
  the recorded day keeps that day, so rotated names sort in the order lines were written; a clock
  more than a day behind it is believed (the recorded day came from a clock that had jumped ahead),
  so the file is rotated and dated today instead of carrying a future day that never expires.
* A write rotates only the file it writes to. For a destination nobody writes to, the background
  sweep (at least once a minute, see `_maintenance`) and `logs prune` call `rotate_if_stale`, so a
  quiet file's lines leave the active file soon after midnight UTC and expire by their day.
* The size limit is checked under the shared lock, so with N processes writing at once a file can
  end up to N-1 lines past `max_bytes` (each saw room for its own line); with one process it never
  goes over, except a single line longer than `max_bytes`, which gets a file of its own.
* The caller gets the rotated path back and hands it to the background worker (`_maintenance`):
  gzip to a temporary file, fsync, atomic rename to `info.<day>.<seq>.log.gz`, then unlink the `.log`.
* A file removed or replaced by hand (not by a rotation) is noticed by a `stat` at most a second
  later; lines written in that second go to the removed file. The same recheck compares the lock
  file with `.info.lock` on disk: a folder replaced by another one (new lock file) is followed too,
  and until then this process locks the old one, so for that second it does not exclude the writers
  of the new folder.

Cost on the caller's thread per line: `flock`, a memory read, `lseek`, `write`, `flock` (plus two
`stat`s once a second). A rotation adds a rename and an open; compression and cleanup never run on the
caller's thread.

How long a write can wait (the asyncio event loop calls the sink directly): the shared `flock` waits
while another process holds the exclusive lock, which it holds for one rotation: a `stat`, a
`rename`, an `open` and that process's one line. At midnight every process that noticed takes it in
turn; the first rotates, the others only reopen. These are metadata operations of the local
filesystem (tens of microseconds); on a stalled disk or a network filesystem the wait is as long as
they take there, which no lock scheme in the writer can shorten. The maintenance thread's
`rotate_if_stale` holds the same locks for the same work.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import mmap
import os
import re
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NS_PER_DAY",
    "RotatedName",
    "RotatingLogFile",
    "format_day",
    "parse_rotated",
]

NS_PER_DAY = 86_400 * 1_000_000_000
_OPEN_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
_DIR_MODE = 0o700  # logs carry session ids and audit records: owner only
_FILE_MODE = 0o600
_ROTATED = re.compile(
    r"^\.?(?P<stem>[A-Za-z0-9_-]+)\.(?P<day>\d{4}-\d{2}-\d{2})\.(?P<seq>\d{4,})\.log(?P<suffix>(?:\.gz)?(?:\.[0-9-]+\.tmp)?)$"
)


def format_day(day: int) -> str:
    """YYYY-MM-DD of a day number (days since the epoch, UTC)."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


@dataclass(frozen=True, slots=True)
class RotatedName:
    """A rotated file's name, parsed: `info.2026-02-24.0003.log[.gz]` (or a compressor's temporary)."""

    stem: str
    day: int
    seq: int
    compressed: bool
    temporary: bool


def parse_rotated(name: str) -> RotatedName | None:
    """The parts of a rotated (or being compressed) file's name; None for any other file."""
    match = _ROTATED.match(name)
    if match is None:
        return None
    suffix = match["suffix"]
    temporary = suffix.endswith(".tmp")
    if name.startswith(".") != temporary:
        return None
    try:
        day = calendar.timegm(time.strptime(match["day"], "%Y-%m-%d")) // 86_400
    except ValueError:
        return None
    return RotatedName(match["stem"], day, int(match["seq"]), suffix.startswith(".gz"), temporary)


def _rotated_path(directory: Path, stem: str, day: int, seq: int) -> Path:
    return directory / f"{stem}.{format_day(day)}.{seq:04d}.log"


def _dated(day: int, recorded_day: int) -> int:
    """The day the active file belongs to, given the clock's day and the day on record (module doc).

    Up to a day behind the record (another process's clock read a little earlier): the record, so
    names sort in write order. More than a day behind: the clock, or every later file would be dated
    by a clock that had jumped ahead and never expire.
    """
    return day if day < recorded_day - 1 else max(day, recorded_day)


_OPEN_FILES: weakref.WeakSet[RotatingLogFile] = weakref.WeakSet()

# The lock file's content: magic, generation, day, inode and next sequence number of the active file.
_STATE = struct.Struct("<8sQqQQ")
_MAGIC = b"clawlog1"
_RECHECK_S = 1.0


class RotatingLogFile:
    """The active file of one destination, appended to and rotated under the scheme in the module doc."""

    __slots__ = ("__weakref__", "_day", "_fd", "_gen", "_id", "_lock_fd", "_lock_id", "_lock_path", "_mutex", "_path",
                 "_recheck_at", "_state", "directory", "max_bytes", "path", "stem")

    def __init__(self, directory: Path, stem: str, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.directory = directory
        self.stem = stem
        self.path = directory / f"{stem}.log"
        self._path = str(self.path)
        self._lock_path = str(directory / f".{stem}.lock")
        self.max_bytes = max_bytes
        self._mutex = threading.Lock()
        self._lock_fd = -1
        self._lock_id = (-1, -1)
        self._state: mmap.mmap | None = None
        self._fd = -1
        self._id = (-1, -1)
        self._day = -1
        self._gen = -1
        self._recheck_at = 0.0
        _OPEN_FILES.add(self)

    # --- the caller's path ------------------------------------------------------------------
    def write(self, line: bytes, now_ns: int) -> Path | None:
        """Append `line` whole; returns the path of a file this call rotated away (to compress), if any."""
        day = now_ns // NS_PER_DAY
        with self._mutex:
            try:
                return self._write_locked(line, day)
            except OSError:
                self._forget()  # start from scratch next time: the folder may have been replaced
                raise

    def _write_locked(self, line: bytes, day: int) -> Path | None:
        self._ensure_lock()
        lock_fd = self._lock_fd
        fcntl.flock(lock_fd, fcntl.LOCK_SH)
        try:
            if self._is_current(day, len(line)):
                self._write_line(line)
                return None
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            rotated = self._rotate(day, len(line))
            self._write_line(line)
            return rotated
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def rotate_if_stale(self, now_ns: int) -> Path | None:
        """Rotate the active file if its lines belong to another day than `now_ns`'s; the rotated path, if any.

        Writes rotate only the file they write to, so without this a quiet destination's lines would
        stay in its active file past their retention (the maintenance sweep and `prune` call it). A
        missing or empty active file is left alone, and nothing is created for it.
        """
        day = now_ns // NS_PER_DAY
        with self._mutex:
            if self._state is not None and _dated(day, self._day) == self._day:
                return None  # this process has the file open and dated today: no system call
            try:
                if os.stat(self._path).st_size == 0:
                    return None
            except OSError:  # no file, or no folder: nothing to rotate
                return None
            try:
                self._ensure_lock()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                try:
                    return self._rotate(day, 0)
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError:
                self._forget()
                raise

    def stale_day(self, now_ns: int) -> int | None:
        """The day `rotate_if_stale(now_ns)` would date the rotated file by, or None if it would not rotate."""
        day = now_ns // NS_PER_DAY
        with self._mutex:
            try:
                if os.stat(self._path).st_size == 0:
                    return None
            except OSError:
                return None
            try:
                self._ensure_lock()
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
                try:
                    self._reopen()  # reads the recorded day of the file now at `path`
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except FileNotFoundError:  # removed meanwhile
                return None
            except OSError:
                self._forget()
                raise
            new_day = _dated(day, self._day)
            return None if new_day == self._day else min(new_day, self._day)

    def _ensure_lock(self) -> None:
        """Open the lock file, or reopen it when the one at its path is no longer ours (folder replaced)."""
        if self._state is None:
            self._open_lock()
        elif time.monotonic() >= self._recheck_at and self._lock_replaced():
            self._forget()  # the active file we hold belongs to the old folder too
            self._open_lock()

    def _lock_replaced(self) -> bool:
        try:
            st = os.stat(self._lock_path)
        except OSError:  # removed, or its folder replaced by a file
            return True
        return (st.st_dev, st.st_ino) != self._lock_id

    def _open_lock(self) -> None:
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            st = os.fstat(fd)
            if st.st_size < _STATE.size:
                os.ftruncate(fd, _STATE.size)  # only ever grows, so concurrent openers agree
            self._state = mmap.mmap(fd, _STATE.size)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd, self._lock_id = fd, (st.st_dev, st.st_ino)

    def _needs_rotation(self, size: int, day: int, n: int) -> bool:
        return _dated(day, self._day) != self._day or (size > 0 and size + n > self.max_bytes)

    def _is_current(self, day: int, n: int) -> bool:
        """Under the shared lock: our descriptor is the file at `path`, and the line belongs in it.

        No rotation happened since we last looked when the generation in the lock file is unchanged
        (rotations bump it under the exclusive lock); a `stat` once a second also catches a file that
        was removed or replaced by hand.
        """
        now_s = time.monotonic()
        if self._read_state()[0] != self._gen or now_s >= self._recheck_at:
            try:
                st = os.stat(self._path)
            except FileNotFoundError:
                return False
            if (st.st_dev, st.st_ino) != self._id:
                try:
                    self._reopen()
                except FileNotFoundError:  # removed by hand between stat and open
                    return False
            else:
                self._adopt_state(st)
            self._recheck_at = now_s + _RECHECK_S
        size = os.lseek(self._fd, 0, os.SEEK_END)  # the end, as other processes have left it
        return not self._needs_rotation(size, day, n)

    def _reopen(self) -> os.stat_result:
        fd = os.open(self._path, _OPEN_APPEND)
        st = os.fstat(fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._id = fd, (st.st_dev, st.st_ino)
        self._adopt_state(st)
        return st

    def _adopt_state(self, st: os.stat_result) -> None:
        gen, state_day, state_ino, _seq = self._read_state()
        self._gen = gen
        # A file the lock file does not describe (state lost, file replaced by hand) is dated by its
        # last write: the real clock, the best there is for a file nobody recorded.
        self._day = state_day if state_ino == st.st_ino else int(st.st_mtime) // 86_400

    def _rotate(self, day: int, n: int) -> Path | None:
        """Under the exclusive lock: rotate if still needed, (re)create the active file, point `_fd` at it."""
        try:
            st: os.stat_result | None = os.stat(self._path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) != self._id:
            try:
                st = self._reopen()
            except FileNotFoundError:
                st = None
        elif st is not None:
            self._adopt_state(st)  # another process may have re-dated it since our shared-lock check
        _gen, state_day, _ino, seq = self._read_state()
        rotated: Path | None = None
        if st is not None:
            new_day = _dated(day, self._day)
            if st.st_size == 0 or not self._needs_rotation(st.st_size, day, n):
                if new_day != self._day:  # an empty file of another day: nothing to keep, re-date it
                    self._write_state(new_day, st.st_ino, seq if state_day == new_day else 1)
                    self._day = new_day
                return None
            # The file's own day; after the clock went back more than a day, today (see `_dated`).
            seq_day = min(self._day, new_day)
            seq = seq if state_day == seq_day else 1
            rotated = _rotated_path(self.directory, self.stem, seq_day, seq)
            while rotated.exists() or rotated.with_name(rotated.name + ".gz").exists():
                seq += 1
                rotated = _rotated_path(self.directory, self.stem, seq_day, seq)
            os.rename(self._path, rotated)
            seq += 1
        else:  # no active file yet (or it was removed by hand)
            seq_day = state_day
            new_day = _dated(day, state_day)
        if new_day != seq_day:
            seq = 1
        fd = os.open(self._path, _OPEN_APPEND | os.O_CREAT, _FILE_MODE)
        new = os.fstat(fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._id, self._day = fd, (new.st_dev, new.st_ino), new_day
        self._write_state(new_day, new.st_ino, seq)
        return rotated

    def _read_state(self) -> tuple[int, int, int, int]:
        """(generation, day, inode, next sequence number) of the active file, as last recorded."""
        assert self._state is not None
        magic, gen, day, ino, seq = _STATE.unpack_from(self._state, 0)
        if magic != _MAGIC:  # a new (zero-filled) or foreign lock file
            return 0, -1, 0, 1
        return gen, day, ino, seq

    def _write_state(self, day: int, ino: int, seq: int) -> None:
        """Under the exclusive lock: record the active file and bump the generation writers check."""
        assert self._state is not None
        self._gen = self._read_state()[0] + 1
        _STATE.pack_into(self._state, 0, _MAGIC, self._gen, day, ino, seq)

    def _write_line(self, line: bytes) -> None:
        written = os.write(self._fd, line)
        if written != len(line):
            # Only a full disk (or a file size limit) shortens a write to a regular file. End the
            # fragment so the next line starts on its own, and report the line as not written.
            with contextlib.suppress(OSError):
                os.write(self._fd, b"\n")
            raise OSError(errno.ENOSPC, f"short write to {self.path} ({written} of {len(line)} bytes)")

    # --- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._mutex:
            self._forget()

    def _forget(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1
        self._id = self._lock_id = (-1, -1)
        self._day = self._gen = -1

    def _after_fork_in_child(self) -> None:
        # The child shares the parent's open file descriptions (and so its flock); it gets its own.
        self._mutex = threading.Lock()
        self._forget()


def _reset_after_fork() -> None:
    for log_file in list(_OPEN_FILES):
        log_file._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)

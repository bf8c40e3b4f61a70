"""Reading the scheduler's JSON files without trusting them.

The spawn queue, inbox and heartbeat folders are written by other processes at any moment, so every
file may be half-written, replaced, deleted, a FIFO, a directory, or garbage. `JsonFolder.scan()`
lists one folder and returns the parsed records of the good files; everything else is counted once
per file version in `clawdbot_otel_source_errors_total{source, reason}` and logged once, and the
scan goes on. A file is re-read only when its version (inode, size, mtime) changes, or while it
is half-written (until it parses, or is older than `PARTIAL_GRACE_S`: then malformed) or unreadable.

Reasons: malformed_json, partial_write, binary, vanished, unreadable, not_a_file, invalid_fields,
oversized, not_a_directory, internal_error.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import orjson

from clawdbot_otel import Telemetry

__all__ = [
    "MAX_FILE_BYTES",
    "PARTIAL_GRACE_S",
    "InvalidRecord",
    "JsonFolder",
    "SourceErrors",
    "optional_str",
    "parse_timestamp",
]

T = TypeVar("T")

#: Files larger than this are not read (`oversized`): the scheduler's records are a few hundred bytes.
MAX_FILE_BYTES = 1 << 20
#: A truncated file is retried until it parses or its mtime is this old, then it is malformed.
PARTIAL_GRACE_S = 30.0

_RETRIED = frozenset({"partial_write", "unreadable"})
_Version = tuple[int, int, int]  # (inode, size, mtime_ns): a rewrite or a replace changes it
Parse = Callable[[str, dict[str, Any], os.stat_result], T]


class InvalidRecord(ValueError):
    """Raised by a parse function: well-formed JSON with a field missing or of the wrong type."""


def _open_for_read(path: str) -> int:
    # O_NONBLOCK: opening a FIFO without a writer blocks forever; a FIFO swapped in between the
    # stat check and this open must not hang the scan. It changes nothing for regular files.
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds from an ISO-8601 string, epoch seconds or epoch milliseconds; None if not one.

    Numbers above 1e11 are milliseconds (1e11 s is the year 5138). Naive ISO times are UTC.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number / 1000.0 if number > 1e11 else number


def optional_str(data: dict[str, Any], key: str) -> str | None:
    """A string field that may be absent or null; any other type is an `InvalidRecord`."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRecord(f"field {key!r} must be a string, not {type(value).__name__}")


def _classify(raw: bytes) -> tuple[Any, str | None, str]:
    """(value, None, '') for good JSON, else (None, reason, detail)."""
    if not raw.strip():
        return None, "partial_write", "empty file"
    if b"\x00" in raw:
        return None, "binary", "contains NUL bytes"
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM from some editors: harmless, orjson rejects it
        raw = raw[3:]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the very end is a write in progress, not garbage.
        if exc.reason == "unexpected end of data" and exc.start >= len(raw) - 3:
            return None, "partial_write", "ends inside a UTF-8 character"
        return None, "binary", f"not UTF-8 text (byte {exc.start})"
    try:
        return orjson.loads(raw), None, ""
    except orjson.JSONDecodeError as exc:
        # orjson says "unexpected end of data" when the document stops early: a write in progress.
        if exc.pos >= len(raw.rstrip()) or "end of data" in exc.msg:
            return None, "partial_write", f"JSON ends early at byte {exc.pos}"
        return None, "malformed_json", f"{exc.msg} at byte {exc.pos}"


class SourceErrors:
    """Counts bad input of one collection point and logs it; the callers make sure it is once."""

    __slots__ = ("_telemetry", "component", "source")

    def __init__(self, telemetry: Telemetry, source: str, component: str) -> None:
        self._telemetry = telemetry
        self.source = source
        self.component = component

    def report(self, reason: str, path: str, detail: str, *, level: str = "WARN") -> None:
        self._telemetry.increment("clawdbot_otel_source_errors_total", {"source": self.source, "reason": reason})
        self._telemetry.log(
            level, self.component, f"Skipped {path}: {reason} ({detail})",
            metadata={"path": path, "reason": reason, "detail": detail, "source": self.source},
        )


    def note(self, message: str, path: str, level: str = "INFO") -> None:
        """A log line about a source that is not an error (a folder not created yet)."""
        self._telemetry.log(level, self.component, message, metadata={"path": path, "source": self.source})


class _Known(Generic[T]):
    """What the folder knows of one file version: its record, or why it has none.

    While a new version is `partial_write`, `record` is still the last good one of the file.
    """

    __slots__ = ("reason", "record", "version")

    def __init__(self, version: _Version, record: T | None, reason: str | None) -> None:
        self.version = version
        self.record = record
        self.reason = reason


class JsonFolder(Generic[T]):
    """One folder of `*.json` records, parsed by `parse`; bad files counted once per version.

    `scan()` returns {path: record} for the good files present now, the same record object as
    last time for an unchanged file (callers use identity to tell "unchanged"), `{}` for a folder
    that does not exist (yet), and None when the folder cannot be listed (callers then keep what
    they knew instead of treating every file as removed).
    """

    __slots__ = ("_errors", "_folder_problem", "_known", "_now", "_parse", "max_bytes", "partial_grace_s",
                 "path", "quiet_missing")

    def __init__(
        self,
        path: str,
        errors: SourceErrors,
        parse: Parse[T],
        *,
        max_bytes: int = MAX_FILE_BYTES,
        partial_grace_s: float = PARTIAL_GRACE_S,
        now: Callable[[], float] = time.time,
        quiet_missing: bool = False,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.partial_grace_s = partial_grace_s
        self.quiet_missing = quiet_missing
        self._errors = errors
        self._parse = parse
        self._now = now
        self._known: dict[str, _Known[T]] = {}
        self._folder_problem: str | None = None  # said once until the folder is fine again

    def scan(self) -> dict[str, T] | None:
        try:
            names = sorted(e.name for e in os.scandir(self.path))  # a stable order for logs and spans
        except FileNotFoundError:
            # Not an error: the scheduler creates its folders on first use. Said once, at INFO.
            if self._folder_problem != "missing":
                self._folder_problem = "missing"
                if not self.quiet_missing:
                    self._errors.note(f"Waiting for folder {self.path} to be created", self.path)
            self._known.clear()
            return {}
        except NotADirectoryError:
            self._folder_once("not_a_directory", "expected a folder, found a file")
            return None
        except OSError as exc:
            self._folder_once("unreadable", f"cannot list folder: {exc.strerror or exc}")
            return None
        self._folder_problem = None
        records: dict[str, T] = {}
        listed: set[str] = set()
        for name in names:
            # Dot files are editors' and writers' temporary files (write to .x.tmp, then rename).
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(self.path, name)
            listed.add(path)
            record = self._read(path)
            if record is not None:
                records[path] = record
        # Bounded memory: forget files that are gone.
        for path in [p for p in self._known if p not in listed]:
            del self._known[path]
        return records

    def _folder_once(self, reason: str, detail: str) -> None:
        if self._folder_problem != reason:
            self._folder_problem = reason
            self._errors.report(reason, self.path, detail)

    def _read(self, path: str) -> T | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._known.pop(path, None)
            self._errors.report("vanished", path, "deleted before it could be read", level="DEBUG")
            return None
        except OSError as exc:
            return self._bad(path, (0, 0, 0), "unreadable", f"cannot stat: {exc.strerror or exc}")
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._known.get(path)
        # An unchanged file is not read again, unless it may read differently now: a write in
        # progress, or a permission problem (chmod does not change the mtime).
        if known is not None and known.version == version and known.reason not in _RETRIED:
            return known.record
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "special"
            return self._bad(path, version, "not_a_file", f"is {kind}, not a regular file")
        if st.st_size > self.max_bytes:
            return self._bad(path, version, "oversized", f"{st.st_size} bytes > limit {self.max_bytes}")
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            self._known.pop(path, None)
            self._errors.report("vanished", path, "deleted before it could be read", level="DEBUG")
            return None
        except _NotRegular:
            return self._bad(path, version, "not_a_file", "replaced by a non-regular file while reading")
        except OSError as exc:
            return self._bad(path, version, "unreadable", f"cannot read: {exc.strerror or exc}")
        if len(raw) > self.max_bytes:  # grew after the stat
            return self._bad(path, version, "oversized", f"more than {self.max_bytes} bytes")
        value, reason, detail = _classify(raw)
        if reason == "partial_write":
            return self._partial(path, version, st.st_mtime, detail)
        if reason is not None:
            return self._bad(path, version, reason, detail)
        if not isinstance(value, dict):
            return self._bad(path, version, "invalid_fields", f"top level is {type(value).__name__}, not an object")
        try:
            record = self._parse(path, value, st)
        except InvalidRecord as exc:
            return self._bad(path, version, "invalid_fields", str(exc))
        except Exception as exc:  # a bug in a parse function must not stop the scan
            return self._bad(path, version, "internal_error", f"{type(exc).__name__}: {exc}")
        self._known[path] = _Known(version, record, None)
        return record

    def _read_bytes(self, path: str) -> bytes:
        fd = _open_for_read(path)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _NotRegular
            chunks: list[bytes] = []
            left = self.max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _bad(self, path: str, version: _Version, reason: str, detail: str) -> T | None:
        known = self._known.get(path)
        if known is None or known.version != version or known.reason != reason:
            self._errors.report(reason, path, detail)
        self._known[path] = _Known(version, None, reason)
        return None

    def _partial(self, path: str, version: _Version, mtime: float, detail: str) -> T | None:
        """Retried every scan; counted `partial_write` once per version, `malformed_json` once when old.

        Meanwhile the file's last good record (if any) stands: a heartbeat rewritten in place is
        still the same heartbeat while the writer is halfway through.
        """
        known = self._known.get(path)
        if self._now() - mtime > self.partial_grace_s:
            return self._bad(path, version, "malformed_json",
                             f"{detail}, unchanged for more than {self.partial_grace_s:g}s")
        previous = known.record if known is not None else None
        if known is None or known.version != version:
            self._errors.report("partial_write", path, f"{detail}; will retry", level="DEBUG")
            self._known[path] = _Known(version, previous, "partial_write")
        return previous


class _NotRegular(OSError):
    pass

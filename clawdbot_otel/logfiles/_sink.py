"""`LevelFileSink`: the log pipeline's JSON lines in per-level files with rotation, compression and cleanup.

    from clawdbot_otel import StreamSink, Telemetry
    from clawdbot_otel.logfiles import LevelFileSink

    telemetry.setup(log_sinks=[StreamSink(), LevelFileSink(fallback=None)])   # stderr and files

Routing follows `RETENTION_POLICY`: an audit record (component `audit`) goes to `audit/`, any other
record to its level's folder only (DEBUG -> debug/, INFO -> info/, WARN and ERROR -> error/, FATAL ->
archive/). Each folder then holds exactly the lines its retention applies to, and no line is stored
twice; to read a time window across levels, merge the folders by timestamp.

A line that cannot be written (full disk, folder missing or replaced, no permission) is written to
the `fallback` stream instead (stderr unless told otherwise) and the error is re-raised, so the
pipeline counts it in `clawdbot_otel_log_write_errors_total{sink="LevelFileSink"}` and carries on.
The next line tries the file again. Beside a `StreamSink` on stderr, pass `fallback=None`: the line
is on stderr already, and would be printed twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Literal

from clawdbot_otel.conventions import LOG_LEVELS

from ._maintenance import MaintenanceWorker
from ._policy import RETENTION_POLICY, LogRetention, destination_dirs, route
from ._rotation import RotatingLogFile

__all__ = ["DEFAULT_MAX_BYTES", "LevelFileSink"]

#: The design's size limit per file (100 MB) before a rotation.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


class LevelFileSink:
    """A `LogSink` that routes each line to its retention destination's file (see the module doc).

    Parameters
    ----------
    log_dir:
        the root holding debug/, info/, error/, archive/, audit/; default `CLAWDBOT_OTEL_LOG_DIR`, else
        `$XDG_STATE_HOME/clawdbot-otel/logs` (`~/.local/state/clawdbot-otel/logs`).
    directories:
        destination -> folder, for destinations that live elsewhere (e.g. `{"debug": "/var/tmp/..."}`).
    max_bytes:
        size at which the active file is rotated (besides midnight UTC). One process never goes
        over it; N processes writing the same folder at once can take a file up to N-1 lines past
        it (the check is made under the shared lock, see `_rotation`).
    clock:
        nanoseconds since the epoch; decides the UTC day of rotation and expiry (tests pass their own).
    fallback:
        where lines go when the file cannot be written: `"stderr"` (the default) is the process's
        stderr at that moment; None writes them nowhere (the error is still counted), for a sink
        that runs beside a `StreamSink` on stderr.
    """

    __slots__ = ("_by_component", "_by_level", "_clock", "_default", "_fallback", "_files", "_worker", "dirs")

    def __init__(
        self,
        log_dir: str | Path | None = None,
        *,
        directories: Mapping[str, str | Path] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], int] = time.time_ns,
        fallback: IO[bytes] | Literal["stderr"] | None = "stderr",
        compresslevel: int = 6,
        policy: tuple[LogRetention, ...] = RETENTION_POLICY,
    ) -> None:
        self.dirs = destination_dirs(log_dir, directories, policy)
        self._files = {
            row.destination: RotatingLogFile(self.dirs[row.destination], row.destination, max_bytes)
            for row in policy
        }
        by_level, by_component = route(policy)
        self._by_level = {level: self._files[row.destination] for level, row in by_level.items()}
        self._by_component = {component: self._files[row.destination] for component, row in by_component.items()}
        # The pipeline only hands the design's names; anything else is filed with INFO, the default level.
        self._default = self._by_level[LOG_LEVELS[1].name]
        self._clock = clock
        self._fallback = fallback
        self._worker = MaintenanceWorker(self.dirs, policy, clock, compresslevel, files=self._files.values())
        self._worker.sweep_later()  # leftovers of earlier runs: uncompressed rotations, expired files

    def write(self, line: bytes, level: str, component: str) -> None:
        target = self._by_component.get(component) or self._by_level.get(level, self._default)
        try:
            rotated = target.write(line, self._clock())
        except OSError:
            self._write_fallback(line)
            raise  # counted by the pipeline (Telemetry._sink_error)
        if rotated is not None:
            self._worker.compress_later(rotated)
            self._worker.sweep_later()

    def _write_fallback(self, line: bytes) -> None:
        if self._fallback is None:
            return
        stream: IO[bytes] | None = (
            getattr(sys.stderr, "buffer", None) if isinstance(self._fallback, str) else self._fallback
        )
        if stream is None:  # no stderr (closed, or a text stream without a buffer)
            return
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or broken as well: nothing left to tell
            pass

    def path_for(self, level: str, component: str = "") -> Path:
        """The active file a record of this level and component is written to."""
        return (self._by_component.get(component) or self._by_level.get(level, self._default)).path

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until pending compressions and cleanups are done; False on timeout."""
        return self._worker.wait_idle(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish background work (up to `timeout_s`), stop the periodic sweep and close the files.

        A later write reopens them (and a later rotation restarts the sweeps).
        """
        self._worker.close(timeout_s)
        for log_file in self._files.values():
            log_file.close()

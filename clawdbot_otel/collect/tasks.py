"""Task completion and the 3-layer validation, as the catalogue's task_* metrics and `validation` spans.

    tasks = TaskInstrumentation(telemetry)
    tasks.complete("t-42", "success", "p3", duration_s=95.0, latency_s=140.0)
    tasks.validate("L2", passed=False, reason="missing evidence", task_id="t-42")

`task_completion_rate` is successes over all completions of the last 24 h, computed at export time
from per-minute buckets: exact over the window with bounded memory (at most window/bucket entries,
1440 by default, however many tasks complete). With no completion in the window it reports nothing
rather than a made-up 0 or 1.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from clawdbot_otel import SpanHandle, Telemetry

from ._gauges import GaugeCallbacks
from ._labels import enum_value

__all__ = ["TaskInstrumentation"]

_EVIDENCE_MAX_CHARS = 512


class _Bucket:
    __slots__ = ("start", "successes", "total")

    def __init__(self, start: float) -> None:
        self.start = start
        self.successes = 0
        self.total = 0


class TaskInstrumentation:
    """Task completions and validation checks (see the module docstring)."""

    __slots__ = ("_buckets", "_gauges", "_lock", "bucket_s", "now", "telemetry", "window_s")

    def __init__(self, telemetry: Telemetry, *, window_s: float = 86400.0, bucket_s: float = 60.0,
                 now: Callable[[], float] = time.time) -> None:
        if not 0 < bucket_s <= window_s:
            raise ValueError(f"need 0 < bucket_s <= window_s, got bucket_s={bucket_s!r} window_s={window_s!r}")
        self.telemetry = telemetry
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.now = now
        self._buckets: collections.deque[_Bucket] = collections.deque()
        self._lock = threading.Lock()  # complete() on the host's threads, the rate on the exporter's
        self._gauges = GaugeCallbacks(telemetry)
        self._gauges.observe("task_completion_rate", self._observe_rate)

    def complete(self, task_id: str | None, status: str, phase: str, *, duration_s: float | None = None,
                 latency_s: float | None = None) -> None:
        """A task finished: status success, failure or timeout (anything else is `other`).

        duration_s: time working on it; latency_s: from its creation (queueing included).
        """
        telemetry = self.telemetry
        status = enum_value("task_completion_total", "status", status)
        telemetry.increment("task_completion_total", {"status": status, "phase": phase})
        if duration_s is not None:
            telemetry.histogram("task_duration_seconds", duration_s, {"phase": phase})
        if latency_s is not None:
            telemetry.histogram("task_latency_seconds", latency_s, {"phase": phase})
        self._remember(status == "success")
        telemetry.log("INFO" if status == "success" else "WARN", "session", f"Task {status}", metadata={
            "task_id": task_id, "status": status, "phase": phase, "duration_s": duration_s, "latency_s": latency_s,
        })

    def validate(self, layer: str, passed: bool, *, reason: str | None = None, evidence: Any = None,
                 task_id: str | None = None, duration_s: float | None = None, parent: Any = None) -> SpanHandle:
        """One validation check: a `validation` span (ended) and a pass or failure count.

        A failed check is a result, not an error of the check: the span is not marked ERROR; its
        `clawdbot.validation.result` says `fail`. `duration_s` back-dates the span's start.
        Returns the ended span's handle (for its trace id in reports).
        """
        telemetry = self.telemetry
        layer_label = enum_value("task_validation_passes", "layer", layer)
        end_ns = int(self.now() * 1e9)
        start_ns = end_ns - int(duration_s * 1e9) if duration_s else None
        handle = telemetry.validation_span(layer, task_id=task_id, parent=parent, start_time=start_ns).start()
        handle.set("clawdbot.validation.result", "pass" if passed else "fail")
        handle.set("clawdbot.validation.reason", reason)
        if evidence is not None:
            text = evidence if isinstance(evidence, str) else repr(evidence)
            handle.set("clawdbot.validation.evidence", telemetry.redactor.text(text)[:_EVIDENCE_MAX_CHARS])
        handle.end(end_ns)
        if passed:
            telemetry.increment("task_validation_passes", {"layer": layer_label})
        else:
            telemetry.increment("task_validation_failures", {"layer": layer_label, "reason": reason or "unspecified"})
        result = "passed" if passed else "failed"
        telemetry.log("DEBUG" if passed else "WARN", "validation", f"Validation {layer} {result}",
                      metadata={"layer": layer, "task_id": task_id, "reason": reason})
        return handle

    def completion_rate(self) -> float | None:
        """Successes / completions over the window, or None when there were none."""
        cutoff = self.now() - self.window_s
        with self._lock:
            self._expire(cutoff)
            total = sum(b.total for b in self._buckets)
            successes = sum(b.successes for b in self._buckets)
        return successes / total if total else None

    def close(self) -> None:
        """Stop reporting the completion rate."""
        self._gauges.close()

    def _remember(self, success: bool) -> None:
        now = self.now()
        start = now - now % self.bucket_s
        with self._lock:
            if not self._buckets or self._buckets[-1].start != start:
                self._buckets.append(_Bucket(start))
                self._expire(now - self.window_s)
            bucket = self._buckets[-1]
            bucket.total += 1
            bucket.successes += success

    def _expire(self, cutoff: float) -> None:
        # A bucket counts while any part of it is inside the window: the window is exact to a bucket.
        while self._buckets and self._buckets[0].start + self.bucket_s <= cutoff:
            self._buckets.popleft()

    def _observe_rate(self) -> Iterable[tuple[float, None]]:
        rate = self.completion_rate()
        if rate is not None:
            yield rate, None

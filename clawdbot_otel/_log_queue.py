"""A batching log processor whose queue takes the facade's `LogItem` tuples as well as SDK records.

When a logger provider's only processor is a `QueuedLogRecordProcessor`, the facade's `EmitOTLP`
appends one small tuple per record to its queue and returns; the caller never waits for an
exporter, and a full queue drops the record and says so
(`clawdbot_otel_dropped_total{reason="log_queue_full"}`). The worker (or `force_flush`) encodes a batch
of tuples with `_log_export.encode_items`. Exporters that accept encoded bytes implement
`export_encoded(payload, count)` (the OTLP exporters of `_sdk_internals` and `FileLogExporter`); any
other exporter (console, in-memory, a user's) gets SDK `ReadableLogRecord`s converted from the
tuples, through its public `export()`. SDK records emitted by other code into the same provider
(`on_emit`) share the queue.

Batching follows the OTEL_BLRP_* variables (queue size, batch size, schedule delay, export timeout)
with the SDK's defaults. `force_flush` and `shutdown` deliver everything queued before them; a forked
child starts with an empty queue and its own worker. Part of the fast export path
(CLAWDBOT_OTEL_FAST_EXPORT=0 uses the SDK's `BatchLogRecordProcessor` instead).
"""

from __future__ import annotations

import collections
import copy
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.environment_variables import (
    OTEL_BLRP_EXPORT_TIMEOUT,
    OTEL_BLRP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BLRP_MAX_QUEUE_SIZE,
    OTEL_BLRP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.resources import Resource

from ._log_export import LogItem, encode_items, item_to_sdk_record, warn_rarely

__all__ = ["EncodedLogExporter", "QueuedLogRecordProcessor"]

_log = logging.getLogger("clawdbot_otel.log_export")


@runtime_checkable
class EncodedLogExporter(Protocol):
    """An exporter that sends an already serialized `ExportLogsServiceRequest`."""

    def export_encoded(self, payload: bytes, count: int) -> LogRecordExportResult: ...


_DEFAULTS = {
    OTEL_BLRP_MAX_QUEUE_SIZE: 2048,
    OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: 512,
    OTEL_BLRP_SCHEDULE_DELAY: 1000,
    OTEL_BLRP_EXPORT_TIMEOUT: 30_000,
}


def _env_int(name: str, value: float | None) -> float:
    """An explicit argument, else the OTEL_BLRP_* variable, else the SDK's default (bad values: default)."""
    if value is not None:
        return value
    text = os.environ.get(name)
    if text:
        try:
            parsed = int(text)
            if parsed > 0:
                return parsed
        except ValueError:
            pass
        _log.warning("clawdbot-otel: %s=%r is not a positive integer; using %s", name, text, _DEFAULTS[name])
    return _DEFAULTS[name]


class QueuedLogRecordProcessor(LogRecordProcessor):
    """A batching processor whose queue takes `LogItem` tuples (the facade) and SDK records (others).

    Drop-in for `BatchLogRecordProcessor` (same OTEL_BLRP_* settings), plus `submit()` for the
    facade's tuples. `synchronous=True` exports each record on the caller's thread instead (tests).
    """

    def __init__(
        self,
        exporter: LogRecordExporter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
        export_timeout_millis: float | None = None,
        synchronous: bool = False,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = int(_env_int(OTEL_BLRP_MAX_QUEUE_SIZE, max_queue_size))
        self.max_export_batch_size = min(
            int(_env_int(OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, max_export_batch_size)), self.max_queue_size
        )
        self.schedule_delay = _env_int(OTEL_BLRP_SCHEDULE_DELAY, schedule_delay_millis) / 1000
        self.export_timeout = _env_int(OTEL_BLRP_EXPORT_TIMEOUT, export_timeout_millis) / 1000
        self.synchronous = synchronous
        self.dropped = 0
        """Records dropped because the queue was full (the caller also counts facade records)."""
        self.failed = 0
        """Records in batches the exporter did not accept."""
        self._send_encoded = _encoded_sender(exporter)
        self._queue: collections.deque[LogItem | ReadableLogRecord] = collections.deque()
        self._shutdown = False
        self._wake_pending = False
        self._export_lock = threading.Lock()
        self._exporting: int | None = None
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        if not synchronous:
            self._start_worker()
            if hasattr(os, "register_at_fork"):
                weak_reinit = weakref.WeakMethod(self._after_fork_in_child)

                def _after_in_child() -> None:
                    reinit = weak_reinit()
                    if reinit is not None:
                        reinit()

                os.register_at_fork(after_in_child=_after_in_child)

    # --- the caller's side -------------------------------------------------------------------------
    def submit(self, item: LogItem) -> bool:
        """Queue one record; False when the queue is full (the record is dropped). Never blocks."""
        queue = self._queue
        if len(queue) >= self.max_queue_size or self._shutdown:
            if self._shutdown:  # ignored after shutdown, as the SDK's processors do: not a full queue
                return True
            self.dropped += 1
            return False
        queue.append(item)
        if self.synchronous:
            self._export_all(None)
        elif len(queue) >= self.max_export_batch_size and not self._wake_pending:
            self._wake_pending = True
            self._wake.set()
        return True

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """An SDK record from another emitter of the same provider: queued like the facade's."""
        # a shallow copy without the context, as BatchLogRecordProcessor does
        copied = copy.copy(log_record.log_record)
        copied.context = Context()
        readable = ReadableLogRecord(
            log_record=copied, resource=log_record.resource or Resource.create({}),
            instrumentation_scope=log_record.instrumentation_scope, limits=log_record.limits,
        )
        queue = self._queue
        if self._shutdown:
            return
        if len(queue) >= self.max_queue_size:
            self.dropped += 1
            warn_rarely("the log queue is full; records are being dropped")
            return
        queue.append(readable)
        if self.synchronous:
            self._export_all(None)
        elif len(queue) >= self.max_export_batch_size and not self._wake_pending:
            self._wake_pending = True
            self._wake.set()

    # --- the worker's side -------------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._run, name="ClawdbotOtelLogExport", daemon=True)
        self._worker.start()

    def _after_fork_in_child(self) -> None:
        # The parent exports what it had queued; the child starts empty, with its own lock and worker.
        self._queue.clear()
        self._export_lock = threading.Lock()
        self._exporting = None
        self._wake = threading.Event()
        self._wake_pending = False
        if not self._shutdown:
            self._start_worker()

    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while not self._shutdown:
                woken = self._wake.wait(self.schedule_delay)
                self._wake.clear()
                self._wake_pending = False
                if self._shutdown:
                    break
                self._export_batches(full_only=woken, deadline=None)
            self._export_batches(full_only=False, deadline=time.monotonic() + self.export_timeout)
        finally:
            detach(token)

    def _export_all(self, deadline: float | None) -> bool:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            return self._export_batches(full_only=False, deadline=deadline)
        finally:
            detach(token)

    def _export_batches(self, *, full_only: bool, deadline: float | None) -> bool:
        """Export queued records in batches; False if the deadline passed with records left."""
        me = threading.get_ident()
        if self._exporting == me:  # an exporter that logs: the loop below picks the new record up
            return True
        batch_size = self.max_export_batch_size
        queue = self._queue
        with self._export_lock:
            self._exporting = me
            # Draining takes what is queued now: records logged meanwhile (even by the exporter
            # itself) wait for the next round instead of keeping this one going.
            remaining = len(queue)
            try:
                while queue and (len(queue) >= batch_size if full_only else remaining > 0):
                    if deadline is not None and time.monotonic() > deadline:
                        return False
                    batch = []
                    popleft = queue.popleft
                    try:
                        for _ in range(min(batch_size, len(queue) if full_only else remaining)):
                            batch.append(popleft())
                    except IndexError:  # another thread emptied it (fork reinit)
                        pass
                    remaining -= len(batch)
                    self._export_batch(batch)
            finally:
                self._exporting = None
        return True

    def _export_batch(self, batch: Sequence[LogItem | ReadableLogRecord]) -> None:
        try:
            send = self._send_encoded
            if send is not None:
                items = [r for r in batch if isinstance(r, tuple)]
                payload, count = encode_items(items)
                if len(items) != len(batch):
                    others = [r for r in batch if not isinstance(r, tuple)]
                    # concatenated requests are one request: repeated fields merge
                    payload += encode_logs(others).SerializeToString()
                    count += len(others)
                result = send(payload, count)
            else:
                records = [item_to_sdk_record(r) if isinstance(r, tuple) else r for r in batch]
                result = self.exporter.export(records)
            if result is not LogRecordExportResult.SUCCESS:
                self.failed += len(batch)
        except Exception as exc:  # an exporter must never break the worker
            self.failed += len(batch)
            warn_rarely(f"exporting {len(batch)} log records failed: {exc!r}")

    # --- flush and shutdown ------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued so far, on this thread; False if the timeout ran out first."""
        if self._shutdown:
            return False
        return self._export_all(time.monotonic() + timeout_millis / 1000)

    def shutdown(self) -> None:
        """Export what is queued (within the export timeout), stop the worker, shut the exporter down."""
        if self._shutdown:
            return
        self._shutdown = True
        worker = self._worker
        if worker is not None and worker.is_alive():
            self._wake.set()
            worker.join(self.export_timeout)
        else:
            self._export_all(time.monotonic() + self.export_timeout)
        try:
            self.exporter.shutdown()  # type: ignore[no-untyped-call]
        except Exception as exc:
            warn_rarely(f"exporter shutdown failed: {exc!r}")


def _encoded_sender(exporter: LogRecordExporter) -> Callable[[bytes, int], LogRecordExportResult] | None:
    if isinstance(exporter, EncodedLogExporter):
        send = exporter.export_encoded
        probe = getattr(exporter, "supports_encoded", None)
        if probe is None or probe():
            return send
    return None

"""structlog pipeline that renders the design's JSON log record and emits it as an OTLP log record.

One event goes: level -> timestamp -> trace context -> correlation id -> record shape (redacted
metadata) -> OTLP emit -> JSON render -> sinks. Each step is a small callable class; work that can
be done once is done in `__init__`, because every step runs on the host's hot path.
Standard-library logging of other libraries joins the same chain through `StdlibBridgeHandler`, so
nothing is exported twice.

`Telemetry.log` does not go through structlog's wrapper: `LogPipeline` runs the same steps fused
into one function (same record, same JSON line, same OTLP record) when the chain is the standard
one and the call has no unusual fields, and hands everything else to the structlog logger. The OTLP
step queues a small tuple when the provider's processor is a `QueuedLogRecordProcessor`
(see `_log_queue`; the fast export path); otherwise it calls the SDK's `Logger.emit`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import IO, Any, Protocol

import orjson
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, SeverityNumber
from opentelemetry.baggage import get_baggage
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from structlog._log_levels import LEVEL_TO_NAME

from ._context import CORRELATION_BAGGAGE_KEY
from ._log_queue import QueuedLogRecordProcessor
from ._redact import Redactor
from ._sdk_internals import QueueRoute, processors_of
from .conventions import LOG_FIELDS, LOG_LEVELS

__all__ = [
    "AddCorrelationId",
    "AddLevel",
    "AddTimestamp",
    "AddTraceContext",
    "EmitOTLP",
    "LogPipeline",
    "LogSink",
    "RenderJSON",
    "ShapeRecord",
    "StdlibBridgeHandler",
    "StreamSink",
    "build_processors",
    "level_value",
]

EventDict = MutableMapping[str, Any]

_LEVEL_BY_METHOD: dict[str, str] = {
    "debug": "DEBUG",
    "info": "INFO",
    "msg": "INFO",
    "warning": "WARN",
    "warn": "WARN",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "FATAL",
    "fatal": "FATAL",
}
_LEVELS = {lv.name: lv for lv in LOG_LEVELS}
# HTTP and gRPC clients the OTLP exporters log through
_EXPORT_CLIENT_LOGGERS = ("urllib3", "grpc", "requests")
_SEVERITY = {lv.name: SeverityNumber(lv.otel_severity_number) for lv in LOG_LEVELS}
_SEVERITY_VALUE = {name: int(number.value) for name, number in _SEVERITY.items()}
_LEVEL_NUMBER = {lv.name: lv.value for lv in LOG_LEVELS}
_TOP_LEVEL = tuple(f.name for f in LOG_FIELDS if f.name != "metadata")
_TOP_LEVEL_SET = frozenset((*_TOP_LEVEL, "metadata", "event"))
#: Record fields whose values come from the host or from frames (a session key is whatever a client sent).
_ID_FIELDS = frozenset({"correlation_id", "request_id", "session_id"})


def level_value(level: str | int) -> int:
    """The design's numeric level for a name (`WARN`, `warning`, `FATAL`, ...) or a number."""
    if isinstance(level, int):
        return level
    number = _LEVEL_NUMBER.get(level)
    if number is not None:
        return number
    name = _LEVEL_BY_METHOD.get(level.lower(), level.upper())
    try:
        return _LEVELS[name].value
    except KeyError:
        allowed = ", ".join(_LEVELS)
        raise ValueError(f"unknown log level {level!r}: use one of {allowed}") from None


def level_name(levelno: int) -> str:
    """DEBUG/INFO/WARN/ERROR/FATAL for a numeric level, rounding down between them."""
    name = "DEBUG"
    for lv in LOG_LEVELS:
        if levelno >= lv.value:
            name = lv.name
    return name


class AddLevel:
    """Sets `level` to the design's name: structlog's `warning` is WARN, `critical` is FATAL."""

    __slots__ = ()

    def __call__(self, _logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if "level" not in event_dict:
            event_dict["level"] = _LEVEL_BY_METHOD.get(method_name) or method_name.upper()
        return event_dict


class AddTimestamp:
    """ISO-8601 UTC with milliseconds and `Z`; the seconds prefix is formatted once per second."""

    __slots__ = ("_clock", "_second_prefix")

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        # (second, its formatted prefix) as one tuple: threads swap it whole, never half-updated
        self._second_prefix: tuple[int, str] = (-1, "")

    def stamp(self, ns: int) -> str:
        second, rest = divmod(ns, 1_000_000_000)
        cached = self._second_prefix
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second_prefix = cached
        return f"{cached[1]}.{rest // 1_000_000:03d}Z"

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        ns = self._clock()
        event_dict["timestamp"] = self.stamp(ns)
        event_dict["_time_ns"] = ns
        return event_dict


class AddTraceContext:
    """`trace_id` (32 hex) and `span_id` (16 hex) of the current span, sampled or not."""

    __slots__ = ()

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
            event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
        return event_dict


class AddCorrelationId:
    """`correlation_id` from W3C baggage when the call did not pass one."""

    __slots__ = ()

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("correlation_id") is None:
            cid = get_baggage(CORRELATION_BAGGAGE_KEY)
            if cid is not None:
                event_dict["correlation_id"] = cid
        return event_dict


class ShapeRecord:
    """Puts the record in the design's field order; anything else goes, redacted, into `metadata`."""

    __slots__ = ("_default_component", "_redactor")

    def __init__(self, redactor: Redactor | None = None, default_component: str = "app") -> None:
        self._redactor = redactor or Redactor()
        self._default_component = default_component

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        record: dict[str, Any] = {
            "timestamp": event_dict.get("timestamp"),
            "level": event_dict.get("level"),
            "component": event_dict.get("component") or self._default_component,
            "message": self._redactor.scrub(str(event_dict.get("event", event_dict.get("message", "")))),
        }
        for key in _TOP_LEVEL[4:]:
            value = event_dict.get(key)
            if value is not None:
                record[key] = self._redactor.scrub(value) if key in _ID_FIELDS and isinstance(value, str) else value
        metadata = event_dict.get("metadata")
        extra = {k: v for k, v in event_dict.items() if k not in _TOP_LEVEL_SET and k[0] != "_"}
        if extra:
            metadata = {**metadata, **extra} if metadata else extra
        if metadata:
            record["metadata"] = self._redactor.mapping(metadata)
        record["_time_ns"] = event_dict.get("_time_ns")
        return record


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return orjson.dumps(value, default=str).decode()


class EmitOTLP:
    """Emits the record as an OTLP log record, in the current span's context, exactly once.

    With a `QueuedLogRecordProcessor` as the provider's only processor the record is queued as a
    tuple (`_log_export.LogItem`) and encoded in batches later; a full queue drops it and calls
    `on_drop(component)`. Otherwise it goes through the SDK's `Logger.emit`.
    """

    __slots__ = ("_logger", "_on_drop", "_provider", "_route")

    def __init__(
        self,
        logger_provider: LoggerProvider,
        scope: str = "clawdbot_otel",
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self._logger: Any = logger_provider.get_logger(scope)
        self._on_drop = on_drop
        self._provider = logger_provider
        self._route = QueueRoute.of(logger_provider, self._logger, QueuedLogRecordProcessor)

    def __call__(self, _logger: Any, _name: str, record: EventDict) -> EventDict:
        self.emit(record, record.get("_time_ns"), otel_context.get_current())
        return record

    def emit(self, record: EventDict, ns: int | None, ctx: Any, span_context: Any = None) -> None:
        """The OTLP record for a shaped record, stamped `ns`, in context `ctx` (whose span context
        the caller may pass when it already has it)."""
        attributes: dict[str, Any] = {"component": record["component"]}
        for key in ("correlation_id", "request_id", "session_id", "duration_ms"):
            value = record.get(key)
            if value is not None:
                attributes[key] = value
        metadata = record.get("metadata")
        if metadata:
            for key, value in metadata.items():
                attributes[f"metadata.{key}"] = _attribute_value(value)
        if otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY, ctx):
            return  # logged by an exporter (or the SDK) itself: the sinks have it, OTLP must not loop
        level = record["level"]
        route = self._route
        if route is not None and route.open():
            if span_context is None:
                span_context = trace.get_current_span(ctx).get_span_context()
            if ns is None:
                observed, ns = time.time_ns(), 0
            else:
                observed = ns
            item = (ns, observed, _SEVERITY_VALUE.get(level, 0), level, record["message"], attributes,
                    span_context.trace_id, span_context.span_id, span_context.trace_flags, self._logger)
            if not route.processor.submit(item) and self._on_drop is not None:
                self._on_drop(record["component"])
            if route.count_created is not None:
                route.count_created()
            return
        if processors_of(self._provider) == ():
            return  # an SDK provider with no processor (OTEL_LOGS_EXPORTER=none): no record to build
        self._logger.emit(
            timestamp=ns,
            context=ctx,
            severity_number=_SEVERITY.get(level, SeverityNumber.UNSPECIFIED),
            severity_text=level,
            body=record["message"],
            attributes=attributes,
        )


class RenderJSON:
    """orjson rendering of the record; hands the sink the line, its level and its component."""

    __slots__ = ()

    def __call__(self, _logger: Any, _name: str, record: EventDict) -> tuple[tuple[bytes], dict[str, Any]]:
        record.pop("_time_ns", None)
        line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        return (line,), {"level": record["level"], "component": record["component"]}


class LogSink(Protocol):
    """Where rendered lines go (a stream, per-level files, ...)."""

    def write(self, line: bytes, level: str, component: str) -> None: ...


class StreamSink:
    """Writes each line to a binary stream (stderr by default) in one write call."""

    __slots__ = ("_lock", "_stream")

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._lock = threading.Lock()

    def write(self, line: bytes, level: str, component: str) -> None:
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class _SinkLogger:
    """The structlog 'logger': fans the rendered line out to the sinks; a failing sink never raises."""

    __slots__ = ("_on_error", "_sinks")

    def __init__(self, sinks: Iterable[LogSink], on_error: Callable[[str, BaseException], None]) -> None:
        self._sinks = tuple(sinks)
        self._on_error = on_error

    def msg(self, line: bytes, level: str = "INFO", component: str = "app") -> None:
        for sink in self._sinks:
            try:
                sink.write(line, level, component)
            except Exception as exc:  # a sink must never break the host
                self._on_error(type(sink).__name__, exc)

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def build_processors(
    logger_provider: LoggerProvider | None,
    redactor: Redactor | None = None,
    clock: Callable[[], int] = time.time_ns,
    *,
    on_drop: Callable[[str], None] | None = None,
) -> list[Callable[..., Any]]:
    """The processor chain, in order. Without a logger provider nothing is emitted over OTLP.

    `on_drop(component)` is called for a record the OTLP export queue had no room for."""
    chain: list[Callable[..., Any]] = [
        AddLevel(),
        AddTimestamp(clock),
        AddTraceContext(),
        AddCorrelationId(),
        ShapeRecord(redactor),
    ]
    if logger_provider is not None:
        chain.append(EmitOTLP(logger_provider, on_drop=on_drop))
    chain.append(RenderJSON())
    return chain


def make_logger(
    processors: list[Callable[..., Any]],
    sinks: Iterable[LogSink],
    min_level: int,
    on_error: Callable[[str, BaseException], None],
) -> Any:
    """A filtering structlog logger over the given chain and sinks, independent of global config."""
    return structlog.wrap_logger(
        _SinkLogger(sinks, on_error),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        cache_logger_on_first_use=True,
    )


_STANDARD_CHAIN = (AddLevel, AddTimestamp, AddTraceContext, AddCorrelationId, ShapeRecord, EmitOTLP, RenderJSON)
_FUSED_TOP_LEVEL = ("timestamp", "level", "component", "message", "correlation_id", "trace_id", "span_id",
                    "request_id", "session_id", "duration_ms")
#: structlog's method name for a level number, as the design's level name (`AddLevel`).
_LEVEL_NAME_BY_NUMBER = {number: _LEVEL_BY_METHOD.get(name) or name.upper() for number, name in LEVEL_TO_NAME.items()}
_RECORD_FIELDS = ("request_id", "session_id", "duration_ms")
#: Fields the standard chain treats specially (they change the record): such calls take structlog's path.
_CHAIN_ONLY_FIELDS = frozenset({"level", "trace_id", "span_id", "event"})
#: Fields the standard chain neither keeps nor puts in metadata.
_IGNORED_FIELDS = frozenset({"timestamp", "message"})


class LogPipeline:
    """`Telemetry.log` without structlog's per-call wrapper: the chain's steps fused into one call.

    Used when `processors` is the standard chain (`build_processors`); the record, the JSON line and
    the OTLP record are exactly the chain's (tests compare them). Anything else (another chain,
    fields the chain treats specially: `level`, `trace_id`, `span_id`) goes to `logger`, the
    structlog logger over the same chain and sinks, which users and the stdlib bridge use directly.
    """

    __slots__ = ("_default_component", "_emit", "_fused", "_min_level", "_on_error", "_redactor", "_sinks",
                 "_timestamp", "logger")

    def __init__(
        self,
        processors: list[Callable[..., Any]],
        sinks: Iterable[LogSink],
        min_level: int,
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self._sinks = tuple(sinks)
        self._min_level = min_level
        self._on_error = on_error
        self.logger = make_logger(processors, self._sinks, min_level, on_error)
        kinds = tuple(type(p) for p in processors)
        self._fused = _TOP_LEVEL == _FUSED_TOP_LEVEL and kinds in (
            _STANDARD_CHAIN, tuple(k for k in _STANDARD_CHAIN if k is not EmitOTLP)
        )
        self._timestamp: AddTimestamp = processors[1] if self._fused else AddTimestamp()  # type: ignore[assignment]
        shape: ShapeRecord = processors[4] if self._fused else ShapeRecord()  # type: ignore[assignment]
        self._redactor = shape._redactor
        self._default_component = shape._default_component
        self._emit: EmitOTLP | None = processors[5] if self._fused and kinds[5] is EmitOTLP else None  # type: ignore[assignment]

    def log(  # noqa: PLR0917 -- positional: this is the hot path
        self,
        levelno: int,
        component: str,
        message: str,
        correlation_id: str | None,
        metadata: Mapping[str, Any] | None,
        fields: dict[str, Any],
    ) -> None:
        if levelno < self._min_level:
            return
        level = _LEVEL_NAME_BY_NUMBER.get(levelno)
        if level is None:  # a non-standard number (25, 5): the design's level below it
            level = level_name(levelno)
            levelno = _LEVELS[level].value
        fused = self._fused
        extra: dict[str, Any] | None = None
        if fields and fused:
            for key, value in fields.items():
                if key in _RECORD_FIELDS:
                    continue
                if key in _CHAIN_ONLY_FIELDS:
                    fused = False
                    break
                if key in _IGNORED_FIELDS or key[0] == "_":
                    continue
                if extra is None:
                    extra = {}
                extra[key] = value
        if not fused:
            self.logger.log(levelno, message, component=component, correlation_id=correlation_id,
                            metadata=metadata, **fields)
            return
        redactor = self._redactor
        # AddTimestamp
        stamp = self._timestamp
        ns = stamp._clock()
        # ShapeRecord, with AddTraceContext and AddCorrelationId reading one context
        record: dict[str, Any] = {
            "timestamp": stamp.stamp(ns),
            "level": level,
            "component": component or self._default_component,
            "message": redactor.scrub(message if isinstance(message, str) else str(message)),
        }
        ctx = otel_context.get_current()
        if correlation_id is None:
            correlation_id = get_baggage(CORRELATION_BAGGAGE_KEY, ctx)  # type: ignore[assignment]
        if correlation_id is not None:
            record["correlation_id"] = redactor.scrub(correlation_id) if isinstance(correlation_id, str) \
                else correlation_id
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            record["trace_id"] = format(span_context.trace_id, "032x")
            record["span_id"] = format(span_context.span_id, "016x")
        if fields:
            for key in _RECORD_FIELDS:
                value = fields.get(key)
                if value is not None:
                    record[key] = redactor.scrub(value) if isinstance(value, str) else value
            if extra:
                metadata = {**metadata, **extra} if metadata else extra
        if metadata:
            record["metadata"] = redactor.mapping(metadata)
        # EmitOTLP, RenderJSON, the sinks
        if self._emit is not None:
            self._emit.emit(record, ns, ctx, span_context)
        line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        component = record["component"]
        for sink in self._sinks:
            try:
                sink.write(line, level, component)
            except Exception as exc:  # a sink must never break the host
                self._on_error(type(sink).__name__, exc)


class StdlibBridgeHandler(logging.Handler):
    """Routes standard-library log records (other libraries' logs) through the same pipeline.

    The component is the record's `component` attribute when set, else the logger's top-level name.
    Records logged while an exporter runs (the SDK marks that context "suppress instrumentation") and
    the SDK's own records reach the sinks but never OTLP: exporting "failed to export" would feed a
    loop while the collector is down. The HTTP/gRPC clients' debug chatter during an export is dropped.
    """

    def __init__(self, logger: Any, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exporting = bool(otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY))
            if exporting and record.levelno < logging.WARNING and record.name.startswith(_EXPORT_CLIENT_LOGGERS):
                return
            fields: dict[str, Any] = {
                "component": getattr(record, "component", None) or record.name.split(".", 1)[0],
                "logger": record.name,
            }
            if record.exc_info and record.exc_info[0] is not None:
                fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
            levelno = _LEVELS[level_name(record.levelno)].value
            if exporting or not record.name.startswith("opentelemetry"):
                self._logger.log(levelno, record.getMessage(), **fields)
                return
            token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                self._logger.log(levelno, record.getMessage(), **fields)
            finally:
                otel_context.detach(token)
        except Exception:
            self.handleError(record)

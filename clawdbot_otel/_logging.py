"""structlog pipeline that renders the design's JSON log record and emits it as an OTLP log record.

One event goes: level -> timestamp -> trace context -> correlation id -> record shape (redacted
metadata) -> OTLP emit -> JSON render -> sinks. Each step is a small callable class; work that can
be done once is done in `__init__`, because every step runs on the host's hot path.
Standard-library logging of other libraries joins the same chain through `StdlibBridgeHandler`, so
nothing is exported twice.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, MutableMapping
from typing import IO, Any, Protocol

import orjson
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, SeverityNumber
from opentelemetry.baggage import get_baggage

from ._context import CORRELATION_BAGGAGE_KEY
from ._redact import Redactor
from .conventions import LOG_FIELDS, LOG_LEVELS

__all__ = [
    "AddCorrelationId",
    "AddLevel",
    "AddTimestamp",
    "AddTraceContext",
    "EmitOTLP",
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
_SEVERITY = {lv.name: SeverityNumber(lv.otel_severity_number) for lv in LOG_LEVELS}
_TOP_LEVEL = tuple(f.name for f in LOG_FIELDS if f.name != "metadata")
_TOP_LEVEL_SET = frozenset((*_TOP_LEVEL, "metadata", "event"))


def level_value(level: str | int) -> int:
    """The design's numeric level for a name (`WARN`, `warning`, `FATAL`, ...) or a number."""
    if isinstance(level, int):
        return level
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

    __slots__ = ("_clock", "_last_prefix", "_last_second")

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._last_second = -1
        self._last_prefix = ""

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        ns = self._clock()
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._last_second:
            self._last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._last_second = second
        event_dict["timestamp"] = f"{self._last_prefix}.{rest // 1_000_000:03d}Z"
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
            "message": event_dict.get("event", event_dict.get("message", "")),
        }
        for key in _TOP_LEVEL[4:]:
            value = event_dict.get(key)
            if value is not None:
                record[key] = value
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
    """Emits the record as an OTLP log record, in the current span's context, exactly once."""

    __slots__ = ("_logger",)

    def __init__(self, logger_provider: LoggerProvider, scope: str = "clawdbot_otel") -> None:
        self._logger = logger_provider.get_logger(scope)

    def __call__(self, _logger: Any, _name: str, record: EventDict) -> EventDict:
        attributes: dict[str, Any] = {"component": record["component"]}
        for key in ("correlation_id", "request_id", "session_id", "duration_ms"):
            value = record.get(key)
            if value is not None:
                attributes[key] = value
        metadata = record.get("metadata")
        if metadata:
            for key, value in metadata.items():
                attributes[f"metadata.{key}"] = _attribute_value(value)
        level = record["level"]
        self._logger.emit(
            timestamp=record.get("_time_ns"),
            context=otel_context.get_current(),
            severity_number=_SEVERITY.get(level, SeverityNumber.UNSPECIFIED),
            severity_text=level,
            body=record["message"],
            attributes=attributes,
        )
        return record


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
) -> list[Callable[..., Any]]:
    """The processor chain, in order. Without a logger provider nothing is emitted over OTLP."""
    chain: list[Callable[..., Any]] = [
        AddLevel(),
        AddTimestamp(clock),
        AddTraceContext(),
        AddCorrelationId(),
        ShapeRecord(redactor),
    ]
    if logger_provider is not None:
        chain.append(EmitOTLP(logger_provider))
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


class StdlibBridgeHandler(logging.Handler):
    """Routes standard-library log records (other libraries' logs) through the same pipeline.

    The component is the record's `component` attribute when set, else the logger's top-level name.
    """

    def __init__(self, logger: Any, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "component": getattr(record, "component", None) or record.name.split(".", 1)[0],
                "logger": record.name,
            }
            if record.exc_info and record.exc_info[0] is not None:
                fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
            self._logger.log(record.levelno, record.getMessage(), **fields)
        except Exception:
            self.handleError(record)

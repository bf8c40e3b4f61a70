"""One call builds tracer, meter and logger providers from the standard OTEL_* variables.

- OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES (incl. `deployment.environment.name`), OTEL_SDK_DISABLED
- OTEL_EXPORTER_OTLP_[TRACES_|METRICS_|LOGS_]ENDPOINT / _PROTOCOL / _HEADERS (read by the exporters)
- OTEL_{TRACES,METRICS,LOGS}_EXPORTER: otlp (default), console, none
- OTEL_TRACES_SAMPLER[_ARG]: unset keeps every trace; the collector's tail sampling decides
- OTEL_METRIC_EXPORT_INTERVAL, OTEL_BSP_* (read by the SDK), OTEL_BLRP_* (read by the log processor)
- CLAWDBOT_OTEL_STRICT, CLAWDBOT_OTEL_LOG_LEVEL, CLAWDBOT_OTEL_CAPTURE_CONTENT, CLAWDBOT_OTEL_OUTPUT_DIR
- CLAWDBOT_OTEL_FAST_EXPORT=0: the SDK's own span and log exporters and batch processors instead of the
  fast export path (`_sdk_internals`); the same records reach the collector either way

With no endpoint set, telemetry goes to OTLP-JSON files (see `_file_export`) and setup says where.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider, set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from ._default import DEFAULT_TELEMETRY
from ._export_hint import EXPORTER_LOGGER, ProtocolMismatchHint
from ._facade import Telemetry
from ._file_export import FileLogExporter, FileMetricExporter, FileSpanExporter
from ._log_queue import QueuedLogRecordProcessor
from ._logging import LogSink, StdlibBridgeHandler, StreamSink, level_value
from ._redact import Redactor
from ._redact_spans import RedactingSpanExporter
from ._sdk_internals import exporter_preferences, fast_export_enabled, otlp_log_exporter, otlp_span_exporter
from .conventions import METRICS, Kind
from .logfiles import LevelFileSink
from .paths import state_dir

__all__ = ["Settings", "histogram_views", "setup", "shutdown"]

_SIGNALS = ("traces", "metrics", "logs")
_TRUE = {"1", "true", "yes", "on"}
_DEVELOPMENT = {"development", "dev", "local", "test"}


def _parse_pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _warn(message: str) -> None:
    # Settings are read before logging is set up: say it on stderr, once per setup.
    sys.stderr.write(f"clawdbot-otel: {message}\n")


def _positive_int(env: Mapping[str, str], name: str, warn: Callable[[str], None]) -> int | None:
    text = env.get(name)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        warn(f"{name}={text!r} is not a positive integer; using the default")
        return None
    return value


def _endpoint_problem(name: str, url: str, protocol: str) -> str | None:
    """Why an OTLP endpoint cannot work, or None. gRPC also takes `host:port` without a scheme."""
    parsed = urlsplit(url)
    if parsed.scheme in ("http", "https") and parsed.hostname:
        try:
            parsed.port  # noqa: B018 -- raises on a port that is not a number
        except ValueError:
            pass
        else:
            return None
    elif protocol == "grpc" and re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", url):
        return None
    return (f"{name}={url!r} is not a URL: set it to the collector's address, e.g. http://127.0.0.1:4318 "
            "(4317 with grpc); writing telemetry to local files meanwhile")


@dataclass(frozen=True)
class Settings:
    """What setup decided from the environment (printed by `clawdbot-otel config`)."""

    service_name: str
    environment: str
    strict: bool
    log_level: str
    log_files: bool
    """Also write per-level log files (CLAWDBOT_OTEL_LOG_FILES=1, or CLAWDBOT_OTEL_LOG_DIR set)."""
    capture_content: bool
    disabled: bool
    exporters: dict[str, str]
    """signal -> otlp/grpc, otlp/http, console, none or file:<path>"""
    metric_export_interval_ms: int
    output_dir: Path
    instance_id: str | None = None
    """service.instance.id from OTEL_RESOURCE_ATTRIBUTES, when the user set one."""
    fast_export: bool = True
    """Our span and log encoders and log queue (CLAWDBOT_OTEL_FAST_EXPORT, default 1) or the SDK's own."""
    problems: tuple[str, ...] = ()
    """What was wrong with the variables (each said once on stderr; `config` exits 2 when any)."""

    @property
    def development(self) -> bool:
        return self.environment in _DEVELOPMENT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, service_name: str = "clawdbot-gateway") -> Settings:
        env = os.environ if env is None else env
        problems: list[str] = []

        def warn(message: str) -> None:
            if message not in problems:  # one line for a variable all three signals read
                problems.append(message)
                _warn(message)

        attrs = _parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        environment = (
            attrs.get("deployment.environment.name")
            or attrs.get("deployment.environment")
            or env.get("CLAWDBOT_OTEL_ENVIRONMENT")
            or "production"
        ).lower()
        development = environment in _DEVELOPMENT
        strict_env = env.get("CLAWDBOT_OTEL_STRICT")
        strict = strict_env.lower() in _TRUE if strict_env else development
        output_dir = Path(env.get("CLAWDBOT_OTEL_OUTPUT_DIR") or state_dir() / "telemetry")
        general_protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        exporters: dict[str, str] = {}
        for signal in _SIGNALS:
            choices = [c.strip().lower() for c in env.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").split(",")]
            choice = choices[0]
            if len(choices) > 1:
                warn(f"OTEL_{signal.upper()}_EXPORTER lists several exporters; only {choice!r} is used")
            if choice == "otlp":
                endpoint = _usable_endpoint(env, signal, general_protocol, warn)
                if endpoint:
                    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", general_protocol)
                    if protocol not in ("grpc", "http/protobuf"):
                        warn(f"OTLP protocol {protocol!r} for {signal} is not supported (grpc, http/protobuf); "
                              "using http/protobuf")
                    choice = "otlp/grpc" if protocol == "grpc" else "otlp/http"
                else:
                    choice = f"file:{output_dir / (signal + '.jsonl')}"
            exporters[signal] = choice
        interval = _positive_int(env, "OTEL_METRIC_EXPORT_INTERVAL", warn)
        log_level = env.get("CLAWDBOT_OTEL_LOG_LEVEL") or ("DEBUG" if development else "INFO")
        try:
            level_value(log_level)
        except ValueError as exc:
            warn(f"{exc}; using INFO")
            log_level = "INFO"
        return cls(
            service_name=env.get("OTEL_SERVICE_NAME") or attrs.get("service.name") or service_name,
            environment=environment,
            strict=strict,
            log_level=log_level,
            log_files=env.get("CLAWDBOT_OTEL_LOG_FILES", "").lower() in _TRUE or bool(env.get("CLAWDBOT_OTEL_LOG_DIR")),
            capture_content=env.get("CLAWDBOT_OTEL_CAPTURE_CONTENT", "").lower() in _TRUE,
            disabled=env.get("OTEL_SDK_DISABLED", "").lower() in _TRUE,
            exporters=exporters,
            metric_export_interval_ms=interval or (5_000 if development else 15_000),
            output_dir=output_dir,
            instance_id=attrs.get("service.instance.id") or None,
            fast_export=fast_export_enabled(env),
            problems=tuple(problems),
        )


def _usable_endpoint(env: Mapping[str, str], signal: str, general_protocol: str,
                     warn: Callable[[str], None]) -> bool:
    """Whether OTLP has an endpoint for `signal` that can work; a broken one is said (once) and ignored."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        url = env.get(name)
        if url:
            protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", general_protocol)
            problem = _endpoint_problem(name, url, protocol)
            if problem is None:
                return True
            warn(problem)
            return False
    return False


def histogram_views() -> list[View]:
    """Explicit bucket boundaries for every catalogue histogram (the instruments also advise them)."""
    return [
        View(instrument_name=m.otel_name, aggregation=ExplicitBucketHistogramAggregation(list(m.buckets)))
        for m in METRICS
        if m.kind is Kind.HISTOGRAM and m.buckets
    ]


def _span_exporter(choice: str, fast: bool) -> SpanExporter | None:
    if choice == "otlp/grpc":
        return otlp_span_exporter("grpc", fast=fast)
    if choice == "otlp/http":
        return otlp_span_exporter("http/protobuf", fast=fast)
    if choice == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if choice.startswith("file:"):
        return FileSpanExporter(Path(choice[5:]), fast=fast)
    return None


def _metric_exporter(choice: str) -> MetricExporter | None:
    if choice == "otlp/grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        return GrpcMetrics()
    if choice == "otlp/http":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

        return HttpMetrics()
    if choice == "console":
        return ConsoleMetricExporter(out=sys.stderr)
    if choice.startswith("file:"):
        return FileMetricExporter(Path(choice[5:]))
    return None


def _log_exporter(choice: str, fast: bool) -> LogRecordExporter | None:
    """With `fast`, the exporters for OTLP and files also take pre-encoded batches (`_log_queue`)."""
    if choice == "otlp/grpc":
        return otlp_log_exporter("grpc", fast=fast)
    if choice == "otlp/http":
        return otlp_log_exporter("http/protobuf", fast=fast)
    if choice == "console":
        return ConsoleLogRecordExporter(out=sys.stderr)
    if choice.startswith("file:"):
        return FileLogExporter(Path(choice[5:]))
    return None


def _log_processor(exporter: LogRecordExporter, fast: bool) -> LogRecordProcessor:
    """The fast path's queue (the facade hands it tuples), or the SDK's batch processor."""
    return QueuedLogRecordProcessor(exporter) if fast else BatchLogRecordProcessor(exporter)


class _ProcessMetricExporter(MetricExporter):
    """Exports only from the process that created it.

    A forked child inherits the parent's aggregated metric state and its reader thread restarts;
    exporting that state from the child would count everything twice. The child gets fresh
    providers instead (`_after_fork_in_child`) and this inherited exporter stays silent there.
    """

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(**exporter_preferences(inner))
        self._inner = inner
        self._pid = os.getpid()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return os.getpid() != self._pid or self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if os.getpid() == self._pid:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _Installed:
    """What setup() created, so shutdown() flushes and stops exactly that, once, in order."""

    lock = threading.Lock()
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    meter_resource: Resource | None = None
    logger_provider: LoggerProvider | None = None
    bridge: logging.Handler | None = None
    settings: Settings | None = None
    telemetry: Telemetry | None = None
    # Providers shutdown() stopped. The OTel globals can be set only once, so a later setup() must not
    # reuse them (a shut-down provider drops everything): it builds new ones and binds them directly.
    retired: list[Any] = []  # noqa: RUF012 -- class-level registry by design


def _existing_sdk_providers() -> tuple[Any, Any, Any]:
    """Providers someone else (e.g. `opentelemetry-instrument`) already installed globally."""
    tp = trace.get_tracer_provider()
    mp = metrics.get_meter_provider()
    lp = get_logger_provider()
    live = [p if not any(p is r for r in _Installed.retired) else None for p in (tp, mp, lp)]
    return (
        live[0] if isinstance(live[0], TracerProvider) else None,
        live[1] if isinstance(live[1], MeterProvider) else None,
        live[2] if isinstance(live[2], LoggerProvider) else None,
    )


def _set_global(current: Any, provider: Any, setter: Any) -> None:
    """Install `provider` globally unless one of ours was already installed (set-once globals)."""
    if not any(current is r for r in _Installed.retired):
        setter(provider)


def _meter_provider(settings: Settings, resource: Resource, extra: Sequence[MetricReader] = ()) -> MeterProvider:
    metric_exporter = _metric_exporter(settings.exporters["metrics"])
    readers = [*extra]
    if metric_exporter is not None:
        readers.append(
            PeriodicExportingMetricReader(_ProcessMetricExporter(metric_exporter), settings.metric_export_interval_ms)
        )
    return MeterProvider(resource=resource, metric_readers=readers, views=histogram_views(), shutdown_on_exit=False)


def _after_fork_in_child() -> None:
    """Fresh metric state in a forked child, under its own `service.instance.id`.

    Spans and logs need nothing: the SDK and our log processor restart their worker threads, and a
    span or record belongs to the process that made it. Metrics are cumulative state: the child starts
    from zero on a new meter provider (bound to the facade; the global one cannot be replaced, and its
    inherited exporter stays silent here), so parent and child never report each other's counts.
    """
    _Installed.lock = threading.Lock()  # it may have been held by another thread at fork time
    old, telemetry, settings = _Installed.meter_resource, _Installed.telemetry, _Installed.settings
    if old is None or telemetry is None or settings is None:
        return
    parent_id = old.attributes.get("service.instance.id")
    instance = f"{parent_id}-{os.getpid()}" if parent_id else f"{socket.gethostname()}-{os.getpid()}"
    resource = old.merge(Resource({"service.instance.id": instance}))
    mp = _meter_provider(settings, resource)
    _Installed.meter_provider, _Installed.meter_resource = mp, resource
    telemetry.bind(mp, _Installed.tracer_provider, _Installed.logger_provider)


os.register_at_fork(after_in_child=_after_fork_in_child)


def setup(
    telemetry: Telemetry = DEFAULT_TELEMETRY,
    *,
    service_name: str = "clawdbot-gateway",
    log_sinks: Iterable[LogSink] | None = None,
    install_logging: bool = True,
    announce: TextIO | None = sys.stderr,
    instance_id: str | None = None,
    metric_readers: Sequence[MetricReader] = (),
) -> Settings:
    """Build providers from the process's OTEL_* variables (the exporters read them too), install them
    globally, and bind `telemetry` (the default instance behind the module-level functions) to them.

    `service.instance.id` is OTEL_RESOURCE_ATTRIBUTES', else `instance_id`, else the host name: stable
    across restarts (the SDK's default is a new UUID per process), so a restarted gateway continues its
    own Prometheus series instead of leaving a dead one behind for GatewayDown to report.

    `metric_readers` are read besides the exporter's (e.g. an in-memory reader that counts series).

    Safe to call twice (the second call only rebinds). Under `opentelemetry-instrument` the
    providers it installed are reused, and its stdlib logging handler is removed so that no log
    record is exported twice.
    """
    settings = Settings.from_env(None, service_name)
    if log_sinks is None and settings.log_files:
        log_sinks = [StreamSink(), LevelFileSink(fallback=None)]  # stderr has every line already
    with _Installed.lock:
        telemetry.strict = settings.strict
        telemetry.capture_content = settings.capture_content
        telemetry._log_level = level_value(settings.log_level)
        if _Installed.settings is not None:
            telemetry.bind(_Installed.meter_provider, _Installed.tracer_provider, _Installed.logger_provider,
                           log_sinks)
            return _Installed.settings
        # once per install: the span exporters below hold this redactor, and the gateway adds its tokens
        telemetry.redactor = Redactor.from_env()
        if settings.disabled:
            telemetry.bind(None, None, None, log_sinks)
            _Installed.settings = settings
            return settings
        current = (trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider())
        tp, mp, lp = _existing_sdk_providers()
        reused = [name for name, p in (("tracer", tp), ("meter", mp), ("logger", lp)) if p is not None]
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "deployment.environment.name": settings.environment,
                "service.instance.id": settings.instance_id or instance_id or socket.gethostname(),
            }
        )
        if tp is None:
            tp = TracerProvider(resource=resource, shutdown_on_exit=False)
            span_exporter = _span_exporter(settings.exporters["traces"], settings.fast_export)
            if span_exporter is not None:
                tp.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(span_exporter, telemetry.redactor)))
            _set_global(current[0], tp, trace.set_tracer_provider)
            _Installed.tracer_provider = tp
        if mp is None:
            mp = _meter_provider(settings, resource, metric_readers)
            _set_global(current[1], mp, metrics.set_meter_provider)
            _Installed.meter_provider, _Installed.meter_resource = mp, resource
        if lp is None:
            lp = LoggerProvider(resource=resource, shutdown_on_exit=False)
            log_exporter = _log_exporter(settings.exporters["logs"], settings.fast_export)
            if log_exporter is not None:
                lp.add_log_record_processor(_log_processor(log_exporter, settings.fast_export))
            _set_global(current[2], lp, set_logger_provider)
            _Installed.logger_provider = lp
        telemetry.bind(mp, tp, lp, log_sinks)
        _Installed.telemetry = telemetry
        if install_logging:
            _install_stdlib_bridge(telemetry)
        _install_protocol_hint(announce)
        _maybe_instrument_asyncio(tp, mp)
        _Installed.settings = settings
    atexit.register(shutdown)
    if announce is not None:
        _announce(settings, reused, announce)
    return settings


def _install_stdlib_bridge(telemetry: Telemetry) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, LoggingHandler | StdlibBridgeHandler):
            root.removeHandler(handler)  # the bridge emits OTLP itself: keep one export per record
    bridge = StdlibBridgeHandler(telemetry.logger)
    root.addHandler(bridge)
    if root.level > telemetry._log_level or root.level == logging.NOTSET:
        root.setLevel(max(telemetry._log_level, logging.DEBUG))
    _Installed.bridge = bridge


def _install_protocol_hint(out: TextIO | None) -> None:
    exporter_logger = logging.getLogger(EXPORTER_LOGGER)
    for handler in list(exporter_logger.handlers):
        if isinstance(handler, ProtocolMismatchHint):
            exporter_logger.removeHandler(handler)
    exporter_logger.addHandler(ProtocolMismatchHint(os.environ, out))


def _maybe_instrument_asyncio(tp: TracerProvider, mp: MeterProvider) -> None:
    """The asyncio instrumentation traces the coroutines and to_thread functions the user names."""
    names = ("OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE", "OTEL_PYTHON_ASYNCIO_TO_THREAD_FUNCTION_NAMES_TO_TRACE",
             "OTEL_PYTHON_ASYNCIO_FUTURE_TRACE_ENABLED")
    if any(os.environ.get(n) for n in names):
        from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor

        instrumentor = AsyncioInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tp, meter_provider=mp)


def _announce(settings: Settings, reused: list[str], out: TextIO) -> None:
    targets = ", ".join(f"{signal} -> {choice}" for signal, choice in settings.exporters.items())
    lines = [f"clawdbot-otel: service {settings.service_name} ({settings.environment}); {targets}"]
    if any(choice.startswith("file:") for choice in settings.exporters.values()):
        lines.append(
            "clawdbot-otel: no OTLP endpoint set, so telemetry is written to local OTLP-JSON files. "
            "Start the stack (`clawdbot-otel stack up`) and set "
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 to send it to the collector."
        )
    if reused:
        lines.append(f"clawdbot-otel: reusing the global {', '.join(reused)} provider(s) already installed")
    out.write("\n".join(lines) + "\n")
    out.flush()


def shutdown(timeout_ms: int = 10_000) -> None:
    """Flush and stop what setup() created: spans first, then metrics, then logs."""
    with _Installed.lock:
        if _Installed.bridge is not None:
            logging.getLogger().removeHandler(_Installed.bridge)
        for provider in (_Installed.tracer_provider, _Installed.meter_provider, _Installed.logger_provider):
            if provider is None:
                continue
            try:
                if isinstance(provider, MeterProvider):
                    provider.force_flush(timeout_ms)
                    provider.shutdown(timeout_millis=timeout_ms)
                else:
                    provider.force_flush(timeout_ms)
                    provider.shutdown()
            except Exception as exc:  # exit must not fail because a collector is down
                sys.stderr.write(f"clawdbot-otel: shutdown of {type(provider).__name__} failed: {exc}\n")
            _Installed.retired.append(provider)
        _Installed.telemetry = None
        _Installed.tracer_provider = _Installed.meter_provider = _Installed.logger_provider = None
        _Installed.meter_resource = None
        _Installed.bridge = None
        _Installed.settings = None

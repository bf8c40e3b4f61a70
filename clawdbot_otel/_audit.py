"""The audit channel: security-relevant events as ordinary log records of component `audit`.

    from clawdbot_otel import audit

    audit("auth", outcome="success", actor=client_id, remote_addr=peer)
    audit("auth", outcome="failure", actor=client_id, reason="bad_token", remote_addr=peer)
    audit("config.change", actor="cli", key="gateway.port", old=18789, new=18790)
    audit("stack.start", actor="clawdbot-otel", services="collector,victorialogs")

The record goes through the same pipeline as `log()` (same JSON shape, redaction, trace context, OTLP
export) with `component="audit"`, so `LevelFileSink` files it in `audit/` (1 year) and the log store keeps it
in its audit instance (1 year). It is never dropped by the minimum log level and never sampled:
the helper uses a logger over the same processors and sinks without the level filter.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._default import DEFAULT_TELEMETRY
from ._logging import level_value, make_logger
from .conventions import AUDIT_CATEGORY

if TYPE_CHECKING:
    from ._facade import Telemetry

__all__ = ["audit"]

_SUCCESS = frozenset({"success", "ok", "allowed"})

# Telemetry -> (the filtered logger it was built beside, the unfiltered audit logger). `bind()` builds
# a new pipeline (new sinks, providers); the audit logger is rebuilt when that happens.
_AUDIT_LOGGERS: weakref.WeakKeyDictionary[Telemetry, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _audit_logger(telemetry: Telemetry) -> Any:
    current = telemetry._logger
    cached = _AUDIT_LOGGERS.get(telemetry)
    if cached is not None and cached[0] is current:
        return cached[1]
    logger = make_logger(telemetry.log_processors, telemetry._log_sinks, 0, telemetry._sink_error)
    _AUDIT_LOGGERS[telemetry] = (current, logger)
    return logger


def audit(
    action: str,
    /,
    *,
    outcome: str = "success",
    actor: str | None = None,
    message: str | None = None,
    level: str | None = None,
    telemetry: Telemetry | None = None,
    correlation_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Write one audit record: `action` (e.g. `auth`, `config.change`, `stack.start`) and its `outcome`.

    The level is INFO for a successful outcome (`success`, `ok`, `allowed`) and WARN otherwise unless
    `level` says; the record is kept whatever the configured minimum level. `actor` is who acted (a
    client id, a user, a command); `fields` (request_id, session_id, and anything else, redacted in
    `metadata`) describe the event. `telemetry` defaults to the module-level instance. Like `log()`,
    this never raises into the caller outside strict mode.
    """
    if telemetry is None:
        telemetry = DEFAULT_TELEMETRY
    try:
        levelno = level_value(level or ("INFO" if outcome in _SUCCESS else "WARN"))
        if actor is not None:
            fields["actor"] = actor
        _audit_logger(telemetry).log(
            levelno, message or action, component=AUDIT_CATEGORY, correlation_id=correlation_id,
            metadata=metadata, action=action, outcome=outcome, **fields,
        )
    except Exception:
        if telemetry.strict:
            raise
        telemetry._count("log_error", AUDIT_CATEGORY)

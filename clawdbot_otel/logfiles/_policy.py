"""The design's Log Retention Policy as data: where each record goes and how long it is kept.

One row per destination folder under one log root (default `$XDG_STATE_HOME/clawdbot-otel/logs`,
or `CLAWDBOT_OTEL_LOG_DIR`):

    debug/    DEBUG              24 hours
    info/     INFO               7 days
    error/    WARN and ERROR     30 days
    archive/  FATAL              90 days
    audit/    component "audit"  1 year (any level)

A record goes to exactly one destination: audit records to audit/, every other record to its level's
folder. The file sink, `logs prune` and the log store's retention classes (one VictoriaLogs instance
per row) all read this table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clawdbot_otel.conventions import AUDIT_CATEGORY, LOG_LEVELS
from clawdbot_otel.paths import state_dir

__all__ = [
    "LOG_DIR_ENV",
    "RETENTION_POLICY",
    "LogRetention",
    "default_log_dir",
    "destination_dirs",
    "route",
]

#: Environment variable naming the log root (the folder that holds debug/, info/, ...).
LOG_DIR_ENV = "CLAWDBOT_OTEL_LOG_DIR"


@dataclass(frozen=True, slots=True)
class LogRetention:
    """One row of the retention policy: a destination folder, what it receives, how long it keeps it.

    `levels` are the design's level names routed here; `component` (the audit channel) takes records
    of that component at any level instead. `scheduled_cleanup` False means only an explicit
    `clawdbot-otel logs prune` removes expired files (the design's "annual review" of audit logs).
    """

    destination: str
    retention_hours: int
    levels: tuple[str, ...] = ()
    component: str | None = None
    scheduled_cleanup: bool = True
    description: str = ""

    @property
    def retention_ns(self) -> int:
        return self.retention_hours * 3_600 * 1_000_000_000


RETENTION_POLICY: tuple[LogRetention, ...] = (
    LogRetention("debug", 24, ("DEBUG",), description="Detailed debugging information"),
    LogRetention("info", 7 * 24, ("INFO",), description="General operational events"),
    LogRetention("error", 30 * 24, ("WARN", "ERROR"), description="Warning and error conditions"),
    LogRetention("archive", 90 * 24, ("FATAL",), description="System-critical failures"),
    LogRetention("audit", 365 * 24, component=AUDIT_CATEGORY, scheduled_cleanup=False,
                 description="Authentication, configuration changes, stack start/stop"),
)


def _check(policy: tuple[LogRetention, ...]) -> None:
    routed = [level for row in policy for level in row.levels]
    names = [lv.name for lv in LOG_LEVELS]
    if sorted(routed) != sorted(names):
        raise ValueError(f"retention policy must route each of {', '.join(names)} exactly once, got {routed}")


_check(RETENTION_POLICY)


def route(
    policy: tuple[LogRetention, ...] = RETENTION_POLICY,
) -> tuple[dict[str, LogRetention], dict[str, LogRetention]]:
    """(level name -> row, component -> row) for the sink's two-dict lookup."""
    by_level = {level: row for row in policy for level in row.levels}
    by_component = {row.component: row for row in policy if row.component is not None}
    return by_level, by_component


def default_log_dir(env: Mapping[str, str] | None = None) -> Path:
    """`CLAWDBOT_OTEL_LOG_DIR`, else `logs/` in the library's XDG state folder (beside `telemetry/`)."""
    env = os.environ if env is None else env
    configured = env.get(LOG_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return state_dir() / "logs"


def destination_dirs(
    log_dir: str | Path | None = None,
    directories: Mapping[str, str | Path] | None = None,
    policy: tuple[LogRetention, ...] = RETENTION_POLICY,
) -> dict[str, Path]:
    """destination -> folder: `<log_dir>/<destination>` unless `directories` names another folder."""
    root = Path(log_dir).expanduser() if log_dir is not None else default_log_dir()
    overrides = dict(directories or {})
    unknown = set(overrides) - {row.destination for row in policy}
    if unknown:
        known = ", ".join(row.destination for row in policy)
        raise ValueError(f"unknown log destination(s) {', '.join(sorted(unknown))}: use one of {known}")
    return {
        row.destination: Path(overrides[row.destination]).expanduser() if row.destination in overrides
        else root / row.destination
        for row in policy
    }

"""The log store's retention classes: one VictoriaLogs storage instance per row of the retention policy.

VictoriaLogs (free edition) has one retention per instance (`-retentionPeriod`), applied by dropping
whole per-day partitions. The design's policy keeps each level for a different time, so the stack runs
one storage instance per policy row, each with that row's period, and one query node in front
(`-storageNode=...`, the same binary in cluster mode) that searches them all: users see one store.

The alternative, one instance keeping everything a year and periodic `/delete/run_task` calls for the
shorter classes, was rejected: VictoriaLogs' documentation says a delete rewrites all stored data and is
meant for rare exceptional cases (GDPR), not for daily housekeeping.

Records are routed to their class by the collector: one logs pipeline per class, each with a `filter`
processor that drops what is not its class, exporting with `otlp_http` to the class's
`/insert/opentelemetry`. `collector_log_routing_config()` writes those pipelines
(otel-collector/logs-victorialogs.yaml, merged with config.yaml by passing both to `--config`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import yaml

from clawdbot_otel.conventions import LOG_LEVELS

from ._policy import RETENTION_POLICY, LogRetention

__all__ = [
    "LOG_ROUTING_HEADER",
    "LogStoreClass",
    "collector_log_routing_config",
    "endpoint_env",
    "log_store_classes",
]

LOG_ROUTING_HEADER = """\
# Logs -> VictoriaLogs, one storage instance per retention class. GENERATED from
# clawdbot_otel/logfiles/_policy.py by `clawdbot-otel logs retention-config`: do not edit by hand,
# change the policy and regenerate (tests/logfiles checks that the two agree).
#
# The collector merges this file with config.yaml: `otelcol-clawdbot --config config.yaml --config <this>`.
# Each pipeline receives every log record and keeps only its class (filter drops the rest), so each
# record is stored exactly once, in the instance whose -retentionPeriod is its class's:
#
{table}
#
# Severity numbers are the OTel logs data model's (DEBUG 5-8, INFO 9-12, WARN 13-16, ERROR 17-20,
# FATAL 21-24); TRACE (1-4) is kept as DEBUG and records without a severity (0) as INFO.
# The sending queue of each exporter is persistent (file_storage in config.yaml): records queued for a
# storage instance that is down survive a collector restart and are retried.
"""

# The OTel severity-number range of each design level (the logs data model groups numbers in fours).
_SEVERITY_RANGES: dict[str, tuple[int, int]] = {"DEBUG": (1, 8), "INFO": (9, 12), "WARN": (13, 16),
                                                 "ERROR": (17, 20), "FATAL": (21, 24)}
# Records without a severity (0: other services' plain log lines) are kept with this level's.
_UNSPECIFIED_AS = "INFO"


def _check_ranges() -> None:
    for level in LOG_LEVELS:
        low, high = _SEVERITY_RANGES[level.name]
        if not low <= level.otel_severity_number <= high:
            raise ValueError(f"{level.name}'s OTel severity {level.otel_severity_number} is outside {low}-{high}")


_check_ranges()


@dataclass(frozen=True, slots=True)
class LogStoreClass:
    """One storage instance of the log store: the policy row it serves and the records it keeps."""

    row: LogRetention
    index: int  # position in the policy: the instance's port is the first storage port + index
    component_rows: tuple[str, ...] = ()  # the policy's channels by component: level rows exclude them

    @property
    def name(self) -> str:
        return f"victorialogs-{self.row.destination}"

    @property
    def retention_period(self) -> str:
        """The `-retentionPeriod` flag value (VictoriaLogs accepts hours; its minimum is one day)."""
        return f"{self.row.retention_hours}h"

    @property
    def keep_condition(self) -> str:
        """OTTL condition true for the log records this instance stores."""
        if self.row.component is not None:
            return f'attributes["component"] == "{self.row.component}"'
        ranges = sorted(_SEVERITY_RANGES[level] for level in self.row.levels)
        low, high = ranges[0][0], ranges[-1][1]
        if any(a[1] + 1 != b[0] for a, b in itertools.pairwise(ranges)):
            raise ValueError(f"levels {self.row.levels} of {self.row.destination} are not contiguous")
        severity = f"severity_number >= {low} and severity_number <= {high}"
        if _UNSPECIFIED_AS in self.row.levels:
            severity = f"(severity_number == 0 or ({severity}))"
        not_component = " and ".join(f'attributes["component"] != "{c}"' for c in self.component_rows)
        return severity + (f" and {not_component}" if not_component else "")


def log_store_classes(policy: tuple[LogRetention, ...] = RETENTION_POLICY) -> tuple[LogStoreClass, ...]:
    components = tuple(row.component for row in policy if row.component is not None)
    return tuple(LogStoreClass(row, index, components) for index, row in enumerate(policy))


def endpoint_env(cls: LogStoreClass) -> str:
    """The collector-config variable holding this class's OTLP/HTTP base URL."""
    return f"VICTORIALOGS_{cls.row.destination.upper()}_OTLP_ENDPOINT"


def collector_log_routing_config(policy: tuple[LogRetention, ...] = RETENTION_POLICY) -> str:
    """otel-collector/logs-victorialogs.yaml: a filter, an exporter and a logs pipeline per class."""
    classes = log_store_classes(policy)
    processors: dict[str, object] = {}
    exporters: dict[str, object] = {}
    pipelines: dict[str, object] = {}
    for cls in classes:
        dest = cls.row.destination
        processors[f"filter/{dest}"] = {"error_mode": "ignore",
                                        "logs": {"log_record": [f"not ({cls.keep_condition})"]}}
        exporters[f"otlp_http/{dest}"] = {
            "endpoint": f"${{env:{endpoint_env(cls)}:-http://{cls.name}:9428/insert/opentelemetry}}",
            "tls": {"insecure": True},
            "sending_queue": {"enabled": True, "storage": "file_storage"},
            # At most 5 s between retries (default 30 s): the backlog reaches a restarted instance quickly.
            "retry_on_failure": {"enabled": True, "max_interval": "5s", "max_elapsed_time": "0s"},
        }
        pipelines[f"logs/{dest}"] = {"receivers": ["otlp"],
                                     "processors": ["memory_limiter", f"filter/{dest}", "batch"],
                                     "exporters": [f"otlp_http/{dest}"]}
    width = max(len(cls.name) for cls in classes)
    table = "\n".join(
        f"#   {cls.name.ljust(width)}  {cls.retention_period:>6}  "
        + (", ".join(cls.row.levels) or f"component {cls.row.component}")
        for cls in classes
    )
    body = {"processors": processors, "exporters": exporters, "service": {"pipelines": pipelines}}
    return LOG_ROUTING_HEADER.format(table=table) + "\n" + yaml.safe_dump(body, sort_keys=False, width=200)

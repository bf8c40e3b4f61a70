"""Local log files by the design's Log Retention Policy: per-level folders, rotation, gzip, cleanup.

    import clawdbot_otel as telemetry
    from clawdbot_otel.logfiles import LevelFileSink

    # beside stderr: a line the files cannot take is already on stderr, so no fallback copy
    telemetry.setup(log_sinks=[telemetry.StreamSink(), LevelFileSink(fallback=None)])
    telemetry.audit("auth", outcome="failure", actor="client-7", reason="bad_token")  # -> audit/

Layout under one root (`CLAWDBOT_OTEL_LOG_DIR`, default `~/.local/state/clawdbot-otel/logs`):
`debug/` 24 h, `info/` 7 days, `error/` (WARN, ERROR) 30 days, `archive/` (FATAL) 90 days, `audit/`
1 year. Several processes may share the folders (see `_rotation` for the locking scheme).
"""

from __future__ import annotations

from ._cli import register
from ._maintenance import PrunedFile, prune
from ._policy import LOG_DIR_ENV, RETENTION_POLICY, LogRetention, default_log_dir
from ._sink import DEFAULT_MAX_BYTES, LevelFileSink
from ._victorialogs import LogStoreClass, collector_log_routing_config, endpoint_env, log_store_classes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LOG_DIR_ENV",
    "RETENTION_POLICY",
    "LevelFileSink",
    "LogRetention",
    "LogStoreClass",
    "PrunedFile",
    "collector_log_routing_config",
    "default_log_dir",
    "endpoint_env",
    "log_store_classes",
    "prune",
    "register",
]

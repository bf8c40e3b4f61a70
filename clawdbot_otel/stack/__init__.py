"""The native observability stack: build it, start it, check it, stop it.

    from clawdbot_otel.stack import build_all, up, down
    binaries = build_all()                # cached under ~/.cache/clawdbot-otel
    stack = up(binaries=binaries)         # all servers ready on 127.0.0.1
    print(stack.jaeger_url)
    down()

The command line is `clawdbot-otel stack build|up|down|status|stop|start` (`register` adds it to a parser).
"""

from __future__ import annotations

from ._build import Binaries, StackError, build_all, cache_dir, find_binaries, find_telemetrygen, repo_root
from ._cli import otlp_export_line, register
from ._launch import ServerStatus, down, info, stack_dir, start_server, status, stop_server, up
from ._servers import AlertConfig, Ports, StackInfo, collector_env
from ._versions import (
    ALERTMANAGER_VERSION,
    COLLECTOR_VERSION,
    JAEGER_MODULE_VERSION,
    JAEGER_VERSION,
    PROMETHEUS_VERSION,
    VICTORIALOGS_VERSION,
)

__all__ = [
    "ALERTMANAGER_VERSION",
    "COLLECTOR_VERSION",
    "JAEGER_MODULE_VERSION",
    "JAEGER_VERSION",
    "PROMETHEUS_VERSION",
    "VICTORIALOGS_VERSION",
    "AlertConfig",
    "Binaries",
    "Ports",
    "ServerStatus",
    "StackError",
    "StackInfo",
    "build_all",
    "cache_dir",
    "collector_env",
    "down",
    "find_binaries",
    "find_telemetrygen",
    "info",
    "otlp_export_line",
    "register",
    "repo_root",
    "stack_dir",
    "start_server",
    "status",
    "stop_server",
    "up",
]

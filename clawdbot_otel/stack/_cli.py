"""`clawdbot-otel stack build|up|down|status|stop|start`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._build import StackError, build_all
from ._launch import STACK_DIR_ENV, down, info, start_server, status, stop_server, up
from ._servers import PORT_OFFSET_ENV, Ports, StackInfo
from ._versions import JAEGER_UI_VERSION

__all__ = ["otlp_export_line", "register"]


def otlp_export_line(stack: StackInfo, env: Mapping[str, str]) -> str:
    """The shell line that points an application at `stack`'s collector: the protocol the exporters will
    use (the caller's OTEL_EXPORTER_OTLP_PROTOCOL, else the SDK's default http/protobuf) and the port
    that speaks it, so the line works pasted as it is."""
    protocol = "grpc" if env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() == "grpc" else "http/protobuf"
    endpoint = stack.otlp_grpc_endpoint if protocol == "grpc" else stack.otlp_http_endpoint
    return f"export OTEL_EXPORTER_OTLP_PROTOCOL={protocol} OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}"


def _ports(args: argparse.Namespace) -> Ports:
    return Ports.from_env(offset=args.port_offset)


def _build(args: argparse.Namespace) -> int:
    build_all(force=args.force, jaeger_ui=args.jaeger_ui, download_jaeger_ui=args.download_jaeger_ui)
    return 0


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    binaries = None if args.no_build else build_all()
    stack = up(root=args.stack_dir, ports=_ports(args), binaries=binaries, samplers=args.samplers,
               timeout=args.timeout)
    print(f"stack up in {time.monotonic() - started:.1f}s; state and logs in {stack.stack_dir}")
    width = max(len(k) for k in stack.urls())
    for name, url in stack.urls().items():
        print(f"  {name:<{width}}  {url}")
    print(f"  {otlp_export_line(stack, os.environ)}")
    return 0


def _down(args: argparse.Namespace) -> int:
    down(args.stack_dir)
    return 0


def _stop(args: argparse.Namespace) -> int:
    stop_server(args.name, args.stack_dir)
    return 0


def _start(args: argparse.Namespace) -> int:
    start_server(args.name, args.stack_dir, timeout=args.timeout)
    return 0


def _status(args: argparse.Namespace) -> int:
    servers = status(args.stack_dir)
    code = (0 if all(s.healthy for s in servers) else 1) if servers else 3
    if args.json:
        print(json.dumps({"servers": [dataclasses.asdict(s) for s in servers]}, indent=2))
        return code
    if not servers:
        print("stack: not running (no state recorded; `clawdbot-otel stack up` starts it)")
        return 3
    width = max(len(s.name) for s in servers)
    for s in servers:
        state = "healthy" if s.healthy else ("running, NOT ready" if s.running else "stopped")
        print(f"  {s.name:<{width}}  pid {s.pid:<7}  {state:<18}  {s.detail}")
    current = info(args.stack_dir)
    if current is not None and all(s.healthy for s in servers):
        for name, url in current.urls().items():
            print(f"  {name}: {url}")
    return 0 if all(s.healthy for s in servers) else 1


def _wrap(func: Any, *, audited: bool = False) -> Any:
    def run(args: argparse.Namespace) -> int:
        sink = None
        if audited:
            # Stack start and stop are audit events; this command has no OTLP pipeline of its own (the
            # collector is what it starts and stops), so its records go to the log files' audit folder.
            from clawdbot_otel import get_telemetry
            from clawdbot_otel.logfiles import LevelFileSink

            sink = LevelFileSink()
            get_telemetry().bind(log_sinks=[sink])
        try:
            return int(func(args))
        except StackError as exc:
            print(f"clawdbot-otel stack {args.stack_command}: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if sink is not None:
                sink.close()

    return run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `stack` subcommand (build, up, down, status, stop, start) to the clawdbot-otel parser."""
    stack = subparsers.add_parser(
        "stack",
        help="build and run the observability stack natively (collector, Jaeger, Prometheus, VictoriaLogs, "
        "Alertmanager)",
        description="Native observability stack on 127.0.0.1: OTel Collector (tail sampling) -> Jaeger v2, "
        "Prometheus, VictoriaLogs; plus Alertmanager. Binaries are cached in $CLAWDBOT_OTEL_CACHE "
        "(default ~/.cache/clawdbot-otel).",
    )
    sub = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser, ports: bool) -> None:
        p.add_argument(
            "--stack-dir",
            type=Path,
            default=None,
            help=f"state/data/log directory (default ${STACK_DIR_ENV} or <cache>/stack)",
        )
        if ports:
            p.add_argument(
                "--port-offset",
                type=int,
                default=None,
                help=f"shift every port by N (default ${PORT_OFFSET_ENV} or 0); single ports: "
                "$CLAWDBOT_OTEL_PORT_<NAME>, e.g. CLAWDBOT_OTEL_PORT_PROMETHEUS=19090",
            )

    p_build = sub.add_parser("build", help="build/install every server into the cache (no-op when cached)")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached binaries are current")
    p_build.add_argument(
        "--jaeger-ui",
        type=Path,
        metavar="PATH",
        default=None,
        help="install this Jaeger UI build (a folder with index.html and static/, or a .tar.gz of one) "
        f"for the native Jaeger; default: the cached one, else ../shared/jaeger-ui/jaeger-ui-{JAEGER_UI_VERSION}"
        ".tar.gz beside the checkout (sha256 checked against its README)",
    )
    p_build.add_argument(
        "--download-jaeger-ui",
        action="store_true",
        help=f"download upstream's jaeger-ui {JAEGER_UI_VERSION} release assets.tar.gz and install it "
        "(prints its sha256)",
    )
    p_build.set_defaults(func=_wrap(_build))

    p_up = sub.add_parser("up", help="start all servers, wait until ready, print the URLs")
    common(p_up, ports=True)
    p_up.add_argument("--no-build", action="store_true", help="do not run `stack build` first")
    p_up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")
    p_up.add_argument("--samplers", type=int, default=0, metavar="N",
                      help="two tiers: the collector on the OTLP ports routes traces by trace id to N tail-sampling "
                           "collectors (default 0: one collector does everything; docs/scaling.md)")
    p_up.set_defaults(func=_wrap(_up, audited=True))

    p_down = sub.add_parser("down", help="stop the servers `stack up` started")
    common(p_down, ports=False)
    p_down.set_defaults(func=_wrap(_down, audited=True))

    p_status = sub.add_parser("status", help="health of each server (exit 0 all healthy, 1 not, 3 not running)")
    common(p_status, ports=False)
    p_status.add_argument("--json", action="store_true",
                          help="each server's name, pid, health, ports, data folder and log file as JSON")
    p_status.set_defaults(func=_wrap(_status))

    p_stop = sub.add_parser("stop", help="stop ONE server (e.g. for an upgrade); the others keep running")
    common(p_stop, ports=False)
    p_stop.add_argument("name", help="the server's name as `stack status` lists it (e.g. jaeger, victorialogs-info)")
    p_stop.set_defaults(func=_wrap(_stop, audited=True))

    p_start = sub.add_parser("start", help="start ONE stopped server again, with its ports and data")
    common(p_start, ports=False)
    p_start.add_argument("name", help="the server's name as `stack status` lists it")
    p_start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")
    p_start.set_defaults(func=_wrap(_start, audited=True))

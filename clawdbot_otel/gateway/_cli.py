"""`clawdbot-otel gateway` and `clawdbot-otel demo` (thin: parse, call the library, print).

`register(subparsers)` is wired into `clawdbot_otel.cli.build_parser()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clawdbot_otel import Redactor

__all__ = ["register"]

DEFAULT_PORT = 18789
EVENT_LOOP_ENV = "CLAWDBOT_OTEL_EVENT_LOOP"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def register(subparsers: Any) -> None:
    """Add the `gateway` and `demo` subcommands to an argparse subparsers object."""
    gw = subparsers.add_parser(
        "gateway", help="run the instrumented gateway (embedded runtime, or a proxy with --upstream)",
        description="A WebSocket gateway on the OpenClaw protocol, instrumented at the gateway and session "
        "collection points. Without --upstream it answers with a simulated agent runtime that writes the "
        "workspace's spawn-queue, inbox and heartbeat files; with --upstream it is a transparent proxy that "
        "adds trace context to request frames.")
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    gw.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default %(default)s)")
    gw.add_argument("--upstream", metavar="ws://HOST:PORT", help="proxy to this gateway instead of simulating one")
    gw.add_argument("--upstream-token", default=os.environ.get("OPENCLAW_GATEWAY_TOKEN"), metavar="TOKEN",
                    help="the upstream's gateway token, for the liveness probe's handshake (the upstream's "
                    "uptime); default $OPENCLAW_GATEWAY_TOKEN. Without it liveness is probed by the handshake's "
                    "challenge alone")
    gw.add_argument("--workspace", metavar="DIR",
                    help="the clawd workspace whose scheduler/ folders the watchers read: with --upstream "
                    "default ~/clawd (read only); embedded, the simulator's own folder (default "
                    "~/.local/state/clawdbot-otel/simulated-workspace), never a real scheduler's")
    gw.add_argument("--token", default=os.environ.get("OPENCLAW_GATEWAY_TOKEN"),
                    help="gateway token clients must present (embedded mode; default $OPENCLAW_GATEWAY_TOKEN)")
    gw.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply the simulated runtime's delays (e.g. 0.1 for a fast demo)")
    gw.add_argument("--heartbeat-stale-after", type=float, default=300.0, metavar="SECONDS",
                    help="a task heartbeat not updated for this long is stale (default %(default)s)")
    gw.add_argument("--openclaw-state", metavar="DIR", default=None,
                    help="with --upstream: the upstream's OpenClaw state folder, read (read-only) for automations, "
                    "tasks and model usage that never pass through the proxy (default $OPENCLAW_STATE_DIR, else "
                    "~/.openclaw, when the upstream is on this machine and the folder exists)")
    gw.add_argument("--openclaw-state-interval", type=float, default=15.0, metavar="SECONDS",
                    help="seconds between reads of the OpenClaw state (default %(default)s)")
    gw.add_argument("--no-telemetry", action="store_true", help="relay/answer without any telemetry (baseline)")
    gw.set_defaults(func=_gateway)

    demo = subparsers.add_parser("demo", help="drive realistic load through a gateway for a while",
                                 description="Connects like the openclaw CLI and runs a mix of agent turns, tool "
                                 "calls, failures, spawns, inbox messages, cron and session queries.")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of load (default %(default)s)")
    demo.add_argument("--gateway", default=f"ws://127.0.0.1:{DEFAULT_PORT}", help="gateway URL (default %(default)s)")
    demo.add_argument("--embedded", action="store_true",
                      help="start an instrumented embedded gateway in this process (free port, temporary "
                      "workspace, telemetry from OTEL_* variables) and drive it: the whole job in one command")
    demo.add_argument("--token", default=os.environ.get("OPENCLAW_GATEWAY_TOKEN"), help="gateway token")
    demo.add_argument("--concurrency", type=int, default=4, help="parallel clients (default %(default)s)")
    demo.add_argument("--seed", type=int, default=None, help="seed for a repeatable mix")
    demo.add_argument("--verbose", action="store_true",
                      help="with --embedded: the gateway's own log lines on stderr too (always in the log files)")
    demo.set_defaults(func=_demo)


def _gateway(args: argparse.Namespace) -> int:
    import clawdbot_otel
    from clawdbot_otel.simulation import ForeignWorkspaceError

    from ._server import GatewayServer

    if args.upstream is not None and (problem := _upstream_problem(args.upstream)) is not None:
        sys.stderr.write(f"clawdbot-otel gateway: {problem}\n")
        return 2
    # host:port tells two gateways on one machine apart and stays the same across restarts
    instance_id = f"{socket.gethostname()}:{args.port}"
    # A proxy observes in a child process that sets telemetry up itself: this one runs no SDK thread.
    if not args.no_telemetry and args.upstream is None:
        clawdbot_otel.setup(instance_id=instance_id)
    state_folder, no_state_reason = (_openclaw_state_folder(args) if args.upstream and not args.no_telemetry
                                     else (None, None))
    try:
        server = GatewayServer(clawdbot_otel.get_telemetry(), host=args.host, port=args.port,
                               upstream=args.upstream, upstream_token=args.upstream_token, workspace=args.workspace,
                               token=args.token, observe=not args.no_telemetry, time_scale=args.time_scale,
                               heartbeat_stale_after_s=args.heartbeat_stale_after,
                               scheduler_from_frames=state_folder is None, openclaw_state=state_folder,
                               openclaw_state_interval_s=args.openclaw_state_interval,
                               observer_process=True, instance_id=instance_id)
    except ForeignWorkspaceError as exc:  # a folder the simulator did not make: refused, says what to do
        sys.stderr.write(f"clawdbot-otel gateway: {exc}\n")
        clawdbot_otel.shutdown()
        return 1

    async def main() -> int:
        try:
            await server.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                sys.stderr.write(f"clawdbot-otel gateway: {args.host}:{args.port} is already in use (another "
                                 "gateway?); stop it or choose another port with --port\n")
            else:
                sys.stderr.write(f"clawdbot-otel gateway: cannot listen on {args.host}:{args.port}: {exc}\n")
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        sys.stdout.write(f"clawdbot-otel gateway: listening on {server.url} ({server.mode})\n")
        if no_state_reason:
            sys.stdout.write(f"clawdbot-otel gateway: {no_state_reason}\n")
        if state_folder is not None:
            sys.stdout.write(f"clawdbot-otel gateway: reading OpenClaw state in {state_folder} every "
                             f"{args.openclaw_state_interval:g} s\n")
        sys.stdout.flush()
        if args.upstream is not None and (silence := await _upstream_silence(args.upstream)) is not None:
            # the proxy still runs: GatewayDown reports the dead upstream, and relaying resumes when it answers
            shown = server.telemetry.redactor.scrub(args.upstream)
            sys.stderr.write(f"clawdbot-otel gateway: upstream {shown} does not answer ({silence}); "
                             "clients are refused until it does: start the OpenClaw gateway there or fix "
                             "--upstream\n")
            sys.stderr.flush()
        await stop.wait()
        await server.stop()
        return 0

    try:
        return run_event_loop(main())
    finally:
        clawdbot_otel.shutdown()


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """`asyncio.run(main)` on uvloop when it is installed and CLAWDBOT_OTEL_EVENT_LOOP is not `asyncio`
    (`uvloop` insists on it; unset: uvloop when there). The relay's path is mostly event-loop work."""
    choice = os.environ.get(EVENT_LOOP_ENV, "").strip().lower()
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit(f"clawdbot-otel gateway: {EVENT_LOOP_ENV}=uvloop but uvloop is not installed: "
                                 "pip install uvloop, or unset it") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def _openclaw_state_folder(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """Proxy mode: the upstream's OpenClaw state folder when it is on this machine, else why it is not read.

    When it is read, it is authoritative for automations and tasks (it sees runs with nobody connected), so the
    frame observer does not count `cron` and `task` events; model usage stays the proxy's for the runs it saw.
    """
    from clawdbot_otel.collect import openclaw_state_dir

    folder = openclaw_state_dir(args.openclaw_state)
    host = urlsplit(args.upstream).hostname or ""
    if args.openclaw_state is None and host not in _LOOPBACK_HOSTS:
        return None, (f"upstream {host} is not on this machine, so its OpenClaw state is not read: automations are "
                      "seen only while a client is connected (pass --openclaw-state DIR if its state is here)")
    if not (folder / "state").is_dir():
        return None, (f"no OpenClaw state in {folder}; automations are seen only while a client is connected "
                      "(pass --openclaw-state DIR)")
    return folder, None


def _upstream_problem(url: str) -> str | None:
    """Why --upstream cannot be a gateway's address, or None."""
    parsed = urlsplit(url)
    try:
        port_ok = parsed.port is None or parsed.port > 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if parsed.scheme in ("ws", "wss") and parsed.hostname and port_ok:
        return None
    shown = Redactor().scrub(url)  # a URL may carry credentials; setup() has not run yet
    if parsed.scheme in ("ws", "wss"):
        return f"--upstream {shown} has no usable host or port: use ws://HOST:PORT (e.g. ws://127.0.0.1:18790)"
    return (f"--upstream {shown} is not a WebSocket URL: use ws://HOST:PORT or wss://HOST:PORT, the "
            "address the OpenClaw gateway listens on (e.g. ws://127.0.0.1:18790)")


async def _upstream_silence(url: str, timeout_s: float = 3.0) -> str | None:
    """None when a WebSocket to the upstream opens within `timeout_s`, else what went wrong."""
    from websockets.asyncio.client import connect

    try:
        async with connect(url, open_timeout=timeout_s, compression=None):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror:
        return "unknown host"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _demo(args: argparse.Namespace) -> int:
    from clawdbot_otel.simulation import run_demo

    try:
        if args.embedded:
            return _embedded_demo(args)
        stats = asyncio.run(run_demo(args.gateway, token=args.token, duration_s=args.duration,
                                     concurrency=args.concurrency, seed=args.seed))
    except ConnectionError as exc:
        sys.stderr.write(f"clawdbot-otel demo: {exc}\n")
        return 1
    return int(stats.exit_status)


def _embedded_demo(args: argparse.Namespace) -> int:
    """The whole job in one process. The terminal gets the progress line and a summary of what was
    produced; the gateway's own log lines go to the log files and OTLP (and stderr with --verbose)."""
    import tempfile

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import clawdbot_otel
    from clawdbot_otel.logfiles import LevelFileSink, default_log_dir
    from clawdbot_otel.simulation import DemoStats, run_demo

    from ._server import GatewayServer
    from ._tally import TelemetryTally

    tally = TelemetryTally()
    files = LevelFileSink(fallback=None)
    sinks: list[clawdbot_otel.LogSink] = [files, tally]
    if args.verbose:
        sinks.append(clawdbot_otel.StreamSink())
    settings = clawdbot_otel.setup(log_sinks=sinks, metric_readers=[tally.reader],
                                   announce=sys.stderr if args.verbose else None)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(tally)

    async def main() -> DemoStats:
        with tempfile.TemporaryDirectory(prefix="clawdbot-otel-demo-") as workspace:
            server = GatewayServer(clawdbot_otel.get_telemetry(), port=0, workspace=workspace, token=args.token,
                                   time_scale=0.2, heartbeat_stale_after_s=5.0)
            await server.start()
            sys.stderr.write(f"clawdbot-otel demo: embedded gateway on {server.url}\n")
            try:
                return await run_demo(server.url, token=args.token, duration_s=args.duration,
                                      concurrency=args.concurrency, seed=args.seed)
            finally:
                await server.stop()

    try:
        stats = asyncio.run(main())
    finally:
        produced = tally.produced()
        clawdbot_otel.shutdown()
        files.close()
    sys.stderr.write(demo_summary(produced.line(), settings.exporters, os.environ, str(default_log_dir())))
    return int(stats.exit_status)


def demo_summary(produced: str, exporters: Mapping[str, str], env: Mapping[str, str], log_dir: str) -> str:
    """What the demo produced, where it went, and the one command to look at it."""
    files = sorted({choice[5:].rsplit("/", 1)[0] for choice in exporters.values() if choice.startswith("file:")})
    if files:
        where = f"written as OTLP-JSON files to {', '.join(files)} (no OTEL_EXPORTER_OTLP_ENDPOINT set)"
        look = "clawdbot-otel stack up  (then run the demo again with the export line it prints)"
    else:
        protocol = "grpc" if "otlp/grpc" in exporters.values() else "http/protobuf"
        where = f"sent over OTLP ({protocol}) to {env.get('OTEL_EXPORTER_OTLP_ENDPOINT', 'the configured endpoint')}"
        look = "clawdbot-otel stack status  (the Jaeger, Prometheus and log store URLs; service clawdbot-gateway)"
    return (f"produced: {produced}\n"
            f"  {where}\n"
            f"  log lines in {log_dir} (--verbose shows them here)\n"
            f"look at them: {look}\n")

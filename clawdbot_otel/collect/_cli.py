"""`clawdbot-otel watch-openclaw`: the OpenClaw state collection point alone, without the proxy."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from typing import Any

from .openclaw_state import OpenClawStateWatcher, openclaw_state_dir

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the `watch-openclaw` subcommand to an argparse subparsers object."""
    watch = subparsers.add_parser(
        "watch-openclaw", help="report a local OpenClaw gateway's automations, tasks and model usage",
        description="Reads OpenClaw's state databases read-only (automation runs, task and flow runs, model "
        "usage) and reports them as the catalogue's scheduler_*, task_* and session token/cost metrics, with a "
        "job span per automation run. For users who run no proxy: with `clawdbot-otel gateway --upstream` the "
        "gateway does this itself, and running both would count model usage twice.")
    watch.add_argument("--openclaw-state", metavar="DIR", default=None,
                       help="OpenClaw's state folder (default $OPENCLAW_STATE_DIR, else ~/.openclaw)")
    watch.add_argument("--interval", type=float, default=15.0, metavar="SECONDS",
                       help="seconds between polls (default %(default)s)")
    watch.add_argument("--once", action="store_true", help="poll once, report, and exit")
    watch.set_defaults(func=_watch)


def _watch(args: argparse.Namespace) -> int:
    import clawdbot_otel

    folder = openclaw_state_dir(args.openclaw_state)
    if args.interval <= 0:
        sys.stderr.write(f"clawdbot-otel watch-openclaw: --interval must be > 0 seconds, not {args.interval}\n")
        return 2
    if not folder.is_dir():
        sys.stderr.write(f"clawdbot-otel watch-openclaw: {folder} does not exist; pass OpenClaw's state folder "
                         "with --openclaw-state DIR (or set OPENCLAW_STATE_DIR)\n")
        return 1
    clawdbot_otel.setup(instance_id=f"{socket.gethostname()}:openclaw-state")
    watcher = OpenClawStateWatcher(clawdbot_otel.get_telemetry(), folder, interval_s=args.interval)
    try:
        if args.once:
            watcher.scan_once()
            counts = watcher.counts
            sys.stdout.write(f"clawdbot-otel watch-openclaw: read {folder}: {counts['runs']} automation run(s), "
                             f"{counts['tasks']} task(s), model usage of {counts['usage']} run(s) reported\n")
            return 0
        sys.stdout.write(f"clawdbot-otel watch-openclaw: reading {folder} every {args.interval:g} s\n")
        sys.stdout.flush()
        asyncio.run(_until_signal(watcher))
        return 0
    finally:
        watcher.close()
        clawdbot_otel.shutdown()


async def _until_signal(watcher: OpenClawStateWatcher) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watcher.start()
    await stop.wait()
    await watcher.stop()

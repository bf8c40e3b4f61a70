"""`clawdbot-otel logs ...`: prune expired log files, print the Loki retention rules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._loki import loki_retention_config
from ._maintenance import prune
from ._policy import LOG_DIR_ENV, RETENTION_POLICY, default_log_dir

__all__ = ["register"]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _prune(args: argparse.Namespace) -> int:
    log_dir = args.log_dir or default_log_dir()
    try:
        pruned = prune(log_dir, dry_run=args.dry_run)
    except OSError as exc:
        sys.stderr.write(f"clawdbot-otel logs prune: {exc}\n")
        return 1
    verb = "would remove" if args.dry_run else "removed"
    for f in pruned:
        sys.stdout.write(f"{verb} {f.path} ({f.destination}, {f.day}, {_size(f.size_bytes)})\n")
    total = sum(f.size_bytes for f in pruned)
    if pruned:
        sys.stdout.write(f"{verb} {len(pruned)} file(s), {_size(total)}, under {log_dir}\n")
    else:
        sys.stdout.write(f"nothing past its retention under {log_dir}\n")
    return 0


def _loki_retention(_args: argparse.Namespace) -> int:
    sys.stdout.write(loki_retention_config())
    return 0


def register(subparsers: Any) -> None:
    """Add the `logs` command (from `add_subparsers()`) with its `prune` and `loki-retention` subcommands."""
    retention = ", ".join(f"{row.destination}/ {row.retention_hours}h" for row in RETENTION_POLICY)
    logs = subparsers.add_parser("logs", help="local log files: prune expired ones, Loki retention rules")
    logs_sub = logs.add_subparsers(dest="logs_command", metavar="SUBCOMMAND", required=True)
    prune_parser = logs_sub.add_parser(
        "prune", help="remove rotated log files past their level's retention",
        description=f"Remove rotated log files past their retention ({retention}), audit included. "
        "Active files and files not named like rotated logs are never touched.",
    )
    prune_parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune_parser.add_argument("--log-dir", metavar="DIR",
                              help=f"log root (default: ${LOG_DIR_ENV}, else {default_log_dir({})})")
    prune_parser.set_defaults(func=_prune)
    loki = logs_sub.add_parser("loki-retention",
                               help="print Loki's per-stream retention runtime config (deploy/loki/retention.yaml)")
    loki.set_defaults(func=_loki_retention)

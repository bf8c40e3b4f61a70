"""`clawdbot-otel logs ...`: prune expired log files, print the log store's retention routing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._maintenance import PrunedFile, prune
from ._policy import LOG_DIR_ENV, RETENTION_POLICY, default_log_dir
from ._victorialogs import collector_log_routing_config

__all__ = ["register"]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _destination_dir(text: str) -> tuple[str, str]:
    destination, sep, folder = text.partition("=")
    if not sep or not destination or not folder:
        raise argparse.ArgumentTypeError(f"expected DESTINATION=FOLDER (e.g. debug=/var/tmp/logs), got {text!r}")
    return destination, folder


def _prune(args: argparse.Namespace) -> int:
    log_dir = args.log_dir or default_log_dir()
    directories = dict(args.dir)
    where = ", ".join([str(log_dir), *(f"{d}/ in {folder}" for d, folder in directories.items())])
    verb = "would remove" if args.dry_run else "removed"
    done: list[PrunedFile] = []

    def report(f: PrunedFile) -> None:  # as it happens: an error half-way still shows what is gone
        done.append(f)
        sys.stdout.write(f"{verb} {f.path} ({f.destination}, {f.day}, {_size(f.size_bytes)})\n")

    try:
        prune(log_dir, dry_run=args.dry_run, directories=directories, on_removed=report)
    except ValueError as exc:  # an unknown --dir destination
        sys.stderr.write(f"clawdbot-otel logs prune: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"clawdbot-otel logs prune: {exc} ({verb} {len(done)} file(s) before the error)\n")
        return 1
    if done:
        sys.stdout.write(f"{verb} {len(done)} file(s), {_size(sum(f.size_bytes for f in done))}, under {where}\n")
    else:
        sys.stdout.write(f"nothing past its retention under {where}\n")
    return 0


def _retention_config(_args: argparse.Namespace) -> int:
    sys.stdout.write(collector_log_routing_config())
    return 0


def _hours(hours: int) -> str:
    return f"{hours // 24} days" if hours >= 48 and hours % 24 == 0 else f"{hours} h"


def _policy_table() -> str:
    rows = [(f"{row.destination}/", _hours(row.retention_hours),
             ", ".join(row.levels) or f"component {row.component}", row.description) for row in RETENTION_POLICY]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
                     for r in rows)


def register(subparsers: Any) -> Any:
    """Add the `logs` command (from `add_subparsers()`) with its `prune` and `retention-config` subcommands;
    returns its subparsers so that other layers can add theirs (`logs search`)."""
    logs = subparsers.add_parser("logs", help="local log files: prune expired ones; the log store's retention routing")
    logs_sub = logs.add_subparsers(dest="logs_command", metavar="SUBCOMMAND", required=True)
    prune_parser = logs_sub.add_parser(
        "prune", help="remove rotated log files past their level's retention",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Remove log files past their retention, audit included:\n\n" + _policy_table() + "\n\n"
        "An active file whose UTC day is over is rotated first, so that its lines expire too. Files not\n"
        "named like rotated logs, and compressions in progress, are never removed.",
    )
    prune_parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune_parser.add_argument("--log-dir", metavar="DIR",
                              help=f"log root (default: ${LOG_DIR_ENV}, else {default_log_dir({})})")
    prune_parser.add_argument("--dir", metavar="DESTINATION=FOLDER", type=_destination_dir, action="append",
                              default=[], help="a destination that lives outside the log root, as configured in "
                              "LevelFileSink(directories=...); repeatable")
    prune_parser.set_defaults(func=_prune)
    routing = logs_sub.add_parser(
        "retention-config",
        help="print the collector's per-retention-class log pipelines (otel-collector/logs-victorialogs.yaml)")
    routing.set_defaults(func=_retention_config)
    return logs_sub

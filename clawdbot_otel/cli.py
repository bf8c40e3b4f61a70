"""`clawdbot-otel`: thin commands over the library (parse arguments, call, print)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from .collect import register as register_watch_openclaw
from .gateway import register as register_gateway
from .logfiles import register as register_logs
from .presentation import catalogue_dict, catalogue_markdown, register_log_search, register_report, register_top
from .stack import register as register_stack

__all__ = ["build_parser", "main"]


def _catalogue(args: argparse.Namespace) -> int:
    if args.format == "json":
        sys.stdout.write(orjson.dumps(catalogue_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(catalogue_markdown())
    return 0


def _config(_args: argparse.Namespace) -> int:
    from ._redact import Redactor
    from ._setup import Settings

    settings = Settings.from_env()  # says each problem on stderr
    data = {k: str(v) if not isinstance(v, bool | int | dict | tuple) else v
            for k, v in dataclasses.asdict(settings).items()}
    data["redaction"] = Redactor.from_env().settings
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 2 if settings.problems else 0


def _drill(args: argparse.Namespace) -> int:
    from .presentation import write_drill_config
    from .stack import StackError, repo_root

    try:
        thresholds = {name: float(value) for name, _, value in (t.partition("=") for t in args.threshold)}
        deploy = repo_root() / "deploy"
        files = write_drill_config(Path(args.drill), rules_dir=deploy / "prometheus" / "rules",
                                   alertmanager_config=deploy / "alertmanager" / "alertmanager.yml",
                                   webhook_url=args.webhook, thresholds=thresholds)
    except (ValueError, StackError) as exc:  # a threshold that is no number or names no alert rule
        sys.stderr.write(f"clawdbot-otel rules --drill: {exc}\n")
        return 2
    for written in (*sorted(files.rules_dir.glob("*.yml")), files.alertmanager_config):
        sys.stderr.write(f"wrote {written}\n")
    return 0


def _rules(args: argparse.Namespace) -> int:
    from .presentation import prometheus_rules_yaml

    if args.drill:
        return _drill(args)
    text = prometheus_rules_yaml()
    if args.write:
        target = Path(args.write)
        target.write_text(text)
        sys.stderr.write(f"wrote {target}\n")
    else:
        sys.stdout.write(text)
    return 0


def _dashboards(args: argparse.Namespace) -> int:
    from .presentation import DASHBOARDS, dashboard_json

    out = Path(args.write)
    out.mkdir(parents=True, exist_ok=True)
    for dashboard in DASHBOARDS:
        target = out / f"{dashboard.uid}.json"
        target.write_bytes(orjson.dumps(dashboard_json(dashboard), option=orjson.OPT_INDENT_2) + b"\n")
        sys.stderr.write(f"wrote {target}\n")
    return 0


def _log_store_url() -> str:
    """The running native stack's log store, else VictoriaLogs' default address."""
    from .stack import info

    running = info()
    return running.victorialogs_url if running is not None else "http://127.0.0.1:9428"


def _stack_url(server: str) -> str:
    """The recorded native stack's URL for `server`, else the default ports (shifted by $CLAWDBOT_OTEL_PORT_OFFSET)."""
    from .stack import Ports, StackInfo, info

    stack = info() or StackInfo(Path(), Ports.from_env(), {})
    return stack.alertmanager_url if server == "alertmanager" else stack.prometheus_url


def _alerts(args: argparse.Namespace) -> int:
    from .presentation import AlertsSourceError, alerts_report, alerts_table
    from .stack import StackError

    try:
        report = alerts_report(args.alertmanager or _stack_url("alertmanager"),
                               args.prometheus or _stack_url("prometheus"), window=args.window,
                               timeout_s=args.timeout)
    except (AlertsSourceError, StackError) as exc:
        sys.stderr.write(f"clawdbot-otel alerts: {exc}\n")
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(alerts_table(report))
    return 0


def _prometheus_urls() -> tuple[str, str]:
    """The recorded native stack's (else the default) Prometheus and Alertmanager, for `top` and `report`."""
    return _stack_url("prometheus"), _stack_url("alertmanager")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clawdbot-otel",
        description="OpenTelemetry observability for the OpenClaw (Clawdbot) gateway and its scheduler.",
        epilog="Telemetry goes where the standard OTEL_* variables say; with no endpoint set it is "
        "written to local files. `clawdbot-otel config` shows what was decided.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cat = sub.add_parser("catalogue", help="print the metric, span and log catalogue")
    cat.add_argument("--format", choices=("json", "markdown"), default="markdown")
    cat.set_defaults(func=_catalogue)
    cfg = sub.add_parser("config", help="print the settings derived from OTEL_* and CLAWDBOT_OTEL_* variables")
    cfg.set_defaults(func=_config)
    rules = sub.add_parser("rules", help="print the Prometheus alert and recording rules generated from the catalogue")
    rules.add_argument("--write", metavar="FILE", help="write them to FILE (deploy/prometheus/rules/clawdbot.yml)")
    rules.add_argument("--drill", metavar="DIR",
                       help="instead, write fire-drill copies of deploy/'s rules and alertmanager.yml into DIR: 5 s "
                       "`for:`, 2 s evaluation and group intervals, every receiver a webhook (docs/alerts.md)")
    rules.add_argument("--webhook", metavar="URL", default="http://127.0.0.1:9099/drill",
                       help="with --drill: receivers post to URL/<receiver name> (default %(default)s)")
    rules.add_argument("--threshold", metavar="ALERT=VALUE", action="append", default=[],
                       help="with --drill: replace ALERT's threshold, e.g. HighMemoryUsage=0.001 (repeatable)")
    rules.set_defaults(func=_rules)
    dash = sub.add_parser("dashboards", help="write the Grafana dashboards generated from the catalogue")
    dash.add_argument("--write", metavar="DIR", default="deploy/grafana/dashboards")
    dash.set_defaults(func=_dashboards)
    alerts = sub.add_parser(
        "alerts", help="firing and recently resolved alerts, where they were routed, and the rules' states",
        description="Reads Alertmanager (firing alerts and the receivers their route resolves to) and Prometheus "
        "(alerts resolved within --window, every alert rule's state). Exit 2 when either does not answer.")
    alerts.add_argument("--alertmanager", metavar="URL",
                        help="Alertmanager (default: the running `clawdbot-otel stack`, else 127.0.0.1:9093 "
                        "shifted by $CLAWDBOT_OTEL_PORT_OFFSET)")
    alerts.add_argument("--prometheus", metavar="URL", help="Prometheus (default: as for --alertmanager, port 9090)")
    alerts.add_argument("--window", default="24h", help="how far back resolved alerts are listed (default %(default)s)")
    alerts.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default %(default)s)")
    alerts.add_argument("--json", action="store_true", help="print JSON instead of the table")
    alerts.set_defaults(func=_alerts)
    # Subcommands that live with their subsystem register themselves.
    register_gateway(sub)
    register_log_search(register_logs(sub), default_url=_log_store_url)
    register_stack(sub)
    register_watch_openclaw(sub)
    register_top(sub, default_urls=_prometheus_urls)
    register_report(sub, default_urls=_prometheus_urls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

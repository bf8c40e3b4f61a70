"""`clawdbot-otel report`: the design's periodic report (Phase 4), from the queries of `_queries`.

Every number is asked of Prometheus at one instant (`evaluated_at`, in the report) over the period, so
anyone can ask the same query at that time and get the same value. JSON and CSV are the export; Markdown
and HTML are for reading, the HTML with its charts drawn as inline SVG (no dependency).
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._prom_api import PromApi, PromApiError
from ._queries import (
    ALERT_ACTIVATIONS,
    ALERT_LAST_ACTIVE,
    CHARTS,
    KPIS,
    TOOL_ERROR_RATES,
    TOP_MODELS_BY_COST,
    TOP_MODELS_BY_TOKENS,
    Kpi,
)

__all__ = ["build_report", "period_seconds", "register_report", "render_report"]

_UNITS_S = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_CHART_POINTS = 120
_NO_SAMPLES = "no data: the query returned no series or 0/0 (none of its metrics had events in the period)"
_NO_BUDGET = "no data: no budget given (--budget-usd)"


def period_seconds(since: str) -> int:
    match = re.fullmatch(r"(\d+)([mhdw])", since)
    if not match or int(match[1]) == 0:
        raise ValueError(f"--since {since!r}: use a number and a unit, e.g. 30m, 24h, 7d")
    return int(match[1]) * _UNITS_S[match[2]]


def kpi_query(kpi: Kpi, since: str, budget_usd: float | None) -> str:
    return kpi.promql(since).replace("{budget}", f"{budget_usd:g}" if budget_usd else "0")


def _kpi_row(api: PromApi, kpi: Kpi, since: str, at: float, budget_usd: float | None) -> dict[str, Any]:
    query = kpi_query(kpi, since, budget_usd)
    row: dict[str, Any] = {"table": kpi.table, "kpi": kpi.name, "target": kpi.target_text, "target_value": kpi.target,
                           "threshold_value": kpi.threshold, "unit": kpi.unit, "query": query}
    value = None if "{budget}" in kpi.promql_template and not budget_usd else api.scalar(query, at)
    if value is None:
        row.update(value=None, verdict="no data",
                   reason=_NO_BUDGET if "{budget}" in kpi.promql_template and not budget_usd else _NO_SAMPLES)
    else:
        row.update(value=value, verdict=kpi.verdict(value))
    return row


def _labelled(api: PromApi, promql: str, label: str, at: float) -> list[dict[str, Any]]:
    found = [{label: s.labels.get(label, ""), "value": s.value} for s in api.instant(promql, at)]
    return sorted(found, key=lambda r: r["value"], reverse=True)


def build_report(api: PromApi, since: str, at: float | None = None, budget_usd: float | None = None) -> dict[str, Any]:
    """The report as data (the JSON export). Raises PromApiError when Prometheus cannot be asked."""
    at = time.time() if at is None else at
    span = period_seconds(since)
    w = since
    alerts = {(s.labels.get("alertname", ""), s.labels.get("severity", "")): s.value
              for s in api.instant(ALERT_LAST_ACTIVE.replace("{w}", w), at)}
    return {
        "period": since,
        "evaluated_at": at,
        "evaluated_at_iso": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds"),
        "prometheus": api.prometheus_url,
        "kpis": [_kpi_row(api, kpi, since, at, budget_usd) for kpi in KPIS],
        "top_models_by_tokens": _labelled(api, TOP_MODELS_BY_TOKENS.replace("{w}", w), "model", at),
        "top_models_by_cost_usd": _labelled(api, TOP_MODELS_BY_COST.replace("{w}", w), "model", at),
        "tool_error_rates": _labelled(api, TOOL_ERROR_RATES.replace("{w}", w), "tool_name", at),
        "alerts_fired": [
            {"alertname": s.labels.get("alertname", ""), "severity": s.labels.get("severity", ""),
             "activations": s.value, "last_active": alerts.get((s.labels.get("alertname", ""),
                                                                 s.labels.get("severity", "")))}
            for s in api.instant(ALERT_ACTIVATIONS.replace("{w}", w), at)
        ],
        "charts": [{"title": title, "unit": unit, "query": promql, "start": at - span, "end": at,
                    "points": api.series(promql, at - span, at, max(span / _CHART_POINTS, 15.0))}
                   for title, unit, promql in CHARTS],
    }


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{100 * value:.2f}%"
    if unit == "seconds":
        return f"{value:.3f} s"
    return f"{value:g}"


def _markdown(report: dict[str, Any]) -> str:
    out = [f"# Clawdbot report: last {report['period']} (at {report['evaluated_at_iso']})", ""]
    table = ""
    for row in report["kpis"]:
        if row["table"] != table:
            table = row["table"]
            out += ["", f"## {table} KPIs", "", "| KPI | Target | Value | Verdict |", "|---|---|---|---|"]
        verdict = row["verdict"] if row["value"] is not None else row["reason"]
        out.append(f"| {row['kpi']} | {row['target']} | {_shown(row['value'], row['unit'])} | {verdict} |")
    sections = (("Top models by tokens", "top_models_by_tokens", "model"),
                ("Top models by cost (USD)", "top_models_by_cost_usd", "model"),
                ("Tool-call error rates", "tool_error_rates", "tool_name"))
    for title, key, label in sections:
        out += ["", f"## {title}", "", f"| {label} | value |", "|---|---|"]
        out += [f"| {r[label]} | {r['value']:.4g} |" for r in report[key]] or ["| (none) | |"]
    out += ["", "## Alerts fired", "", "| alert | severity | activations |", "|---|---|---|"]
    out += [f"| {a['alertname']} | {a['severity']} | {a['activations']:g} |" for a in report["alerts_fired"]] \
        or ["| (none) | | |"]
    return "\n".join(out) + "\n"


def _csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "name", "value", "target", "verdict", "reason"])
    for row in report["kpis"]:
        writer.writerow([f"kpi:{row['table']}", row["kpi"], "" if row["value"] is None else repr(row["value"]),
                         row["target"], row["verdict"], row.get("reason", "")])
    for key, label in (("top_models_by_tokens", "model"), ("top_models_by_cost_usd", "model"),
                       ("tool_error_rates", "tool_name")):
        for r in report[key]:
            writer.writerow([key, r[label], repr(r["value"]), "", "", ""])
    for a in report["alerts_fired"]:
        writer.writerow(["alerts_fired", f"{a['alertname']} ({a['severity']})", repr(a["activations"]), "", "", ""])
    return out.getvalue()


def _tick(value: float) -> str:
    """An axis label short enough for the chart's margin: 3470 -> 3.47k."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def svg_chart(chart: dict[str, Any], width: int = 520, height: int = 180) -> str:
    """A report chart (title, unit, points over start..end) as inline SVG: axes, the max value, the ends."""
    points, title, unit, start, end = (chart[k] for k in ("points", "title", "unit", "start", "end"))
    pad_l, pad_b, pad_t = 56, 22, 24
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{html.escape(title)}"><text x="{pad_l}" y="16" font-size="13" font-weight="bold">'
            f"{html.escape(title)} ({html.escape(unit)})</text>")
    axes = (f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#888"/>'
            f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 8}" y2="{height - pad_b}" stroke="#888"/>')
    if not points:
        return head + axes + f'<text x="{pad_l + 10}" y="{height / 2}" fill="#888">no data in the period</text></svg>'
    top = max(v for _, v in points) or 1.0
    plot_w, plot_h = width - 8 - pad_l, height - pad_b - pad_t

    def xy(t: float, v: float) -> str:
        x = pad_l + (t - start) / max(end - start, 1e-9) * plot_w
        return f"{x:.1f},{pad_t + plot_h - v / top * plot_h:.1f}"

    line = " ".join(xy(t, v) for t, v in points)
    labels = "".join(
        f'<text x="{x}" y="{height - 6}" font-size="11" text-anchor="{anchor}">'
        f'{datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")}</text>'
        for x, t, anchor in ((pad_l, start, "start"), (width - 8, end, "end")))
    return (head + axes + labels + f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="11" text-anchor="end">'
            f"{_tick(top)}</text>"
            f'<text x="{pad_l - 4}" y="{height - pad_b}" font-size="11" text-anchor="end">0</text>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{line}"/></svg>')


_VERDICT_COLOUR = {"met": "#2e7d32", "warning": "#ef6c00", "breached": "#c62828", "no data": "#757575"}


def _html(report: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r['table'])}</td><td>{esc(r['kpi'])}</td><td>{esc(r['target'])}</td>"
        f"<td>{esc(_shown(r['value'], r['unit']))}</td><td style=\"color:{_VERDICT_COLOUR[r['verdict']]}\">"
        f"<b>{esc(r['verdict'])}</b>{'<br><small>' + esc(r['reason']) + '</small>' if 'reason' in r else ''}"
        f"</td></tr>" for r in report["kpis"])

    def table(key: str, label: str, head: str) -> str:
        body = "".join(f"<tr><td>{esc(r[label])}</td><td>{r['value']:.4g}</td></tr>" for r in report[key])
        return f"<table><tr><th>{label}</th><th>{head}</th></tr>{body or '<tr><td>(none)</td><td></td></tr>'}</table>"

    alerts = "".join(f"<tr><td>{esc(a['alertname'])}</td><td>{esc(a['severity'])}</td>"
                     f"<td>{a['activations']:g}</td></tr>" for a in report["alerts_fired"])
    charts = "".join(svg_chart(chart) for chart in report["charts"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clawdbot report: last {esc(report['period'])}</title>
<style>body{{font-family:sans-serif;margin:24px}}table{{border-collapse:collapse;margin:8px 0 20px}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}
.charts svg{{border:1px solid #ddd}}</style></head><body>
<h1>Clawdbot report: last {esc(report['period'])}</h1>
<p>Evaluated at {esc(report['evaluated_at_iso'])} against {esc(report['prometheus'])}.</p>
<h2>Charts</h2><div class="charts">{charts}</div>
<h2>KPIs</h2><table><tr><th>Table</th><th>KPI</th><th>Target</th><th>Value</th><th>Verdict</th></tr>{rows}</table>
<h2>Top models by tokens</h2>{table("top_models_by_tokens", "model", "tokens")}
<h2>Top models by cost</h2>{table("top_models_by_cost_usd", "model", "USD")}
<h2>Tool-call error rates</h2>{table("tool_error_rates", "tool_name", "failed share")}
<h2>Alerts fired</h2><table><tr><th>alert</th><th>severity</th><th>activations</th></tr>{alerts}</table>
</body></html>
"""


def render_report(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    return {"md": _markdown, "csv": _csv, "html": _html}[fmt](report)


def register_report(subparsers: Any, default_urls: Callable[[], tuple[str, str]]) -> None:
    """Add `report`; `default_urls()[0]` is Prometheus when --prometheus is absent."""
    parser = subparsers.add_parser(
        "report", help="the design's periodic report: KPIs against their targets, top models, tool errors, alerts",
        description="Each KPI of the design's four tables with target, value over the period and verdict (met, "
        "warning, breached, or no data with the reason), top models by tokens and cost, tool-call error rates, "
        "alerts fired, and charts. json and csv are the export. Exit status 2 when Prometheus cannot be asked.")
    parser.add_argument("--since", default="24h", metavar="PERIOD", help="24h, 7d, 1h, ... (default 24h)")
    parser.add_argument("--format", choices=("html", "md", "json", "csv"), default="md")
    parser.add_argument("--out", metavar="PATH", help="write to PATH instead of standard output")
    parser.add_argument("--budget-usd", type=float, metavar="USD",
                        help="token budget for the period (Token Budget KPI)")
    parser.add_argument("--prometheus", metavar="URL", help="default: the running native stack's")

    def run(args: argparse.Namespace) -> int:
        api = PromApi(args.prometheus or default_urls()[0])
        try:
            text = render_report(build_report(api, args.since, budget_usd=args.budget_usd), args.format)
        except (ValueError, PromApiError) as exc:
            sys.stderr.write(f"clawdbot-otel report: {exc} (is the stack up? `clawdbot-otel stack up`)\n")
            return 2
        if args.out:
            Path(args.out).write_text(text)
            sys.stderr.write(f"wrote {args.out}\n")
        else:
            sys.stdout.write(text)
        return 0

    parser.set_defaults(func=run)

"""`clawdbot-otel top`: the design's "Dashboard Layout" as a live terminal screen (Rich's Live); keys switch
to the design's other five summary views (`_top_views`).

Every number is one of the Overview queries of `_queries` (the Grafana Overview shows the same strings),
evaluated at one instant per frame, which the frame prints, so a test or a person can ask Prometheus the
same question and get the same answer. Active alerts come from Alertmanager. A Prometheus that cannot be
asked shows as DOWN in the frame.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._prom_api import PromApi, PromApiError
from ._queries import OVERVIEW, SESSION_LIMITS
from ._top_views import VIEWS, collect_view, next_view, view_renderable

__all__ = ["Frame", "collect_frame", "frame_text", "line_chart", "register_top", "view_frame"]

_CHART_HOURS = 24
_CHART_STEP_S = 300.0
_FRAME_WIDTH = 100


@dataclass(slots=True)
class Frame:
    """One evaluation of the Overview queries at `at` (Unix seconds)."""

    at: float
    prometheus_error: str = ""
    values: dict[str, float | None] = field(default_factory=dict)
    sessions: dict[str, float] = field(default_factory=dict)
    latency: list[tuple[float, float]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alertmanager_error: str = ""


_SCALARS = ("gateway_up", "uptime_ratio", "latency_p95", "completed", "in_progress", "failed",
            "pending_validation", "queue_spawn", "queue_inbox", "queue_processing")


def collect_frame(api: PromApi, at: float | None = None) -> Frame:
    frame = Frame(time.time() if at is None else at)
    try:
        for key in _SCALARS:
            frame.values[key] = api.scalar(OVERVIEW[key].promql, frame.at)
        sessions = api.instant(OVERVIEW["sessions"].promql, frame.at)
        frame.sessions = {s.labels.get("type", "?"): s.value for s in sessions}
        frame.latency = api.series(OVERVIEW["latency_p95_series"].promql, frame.at - _CHART_HOURS * 3600, frame.at,
                                   _CHART_STEP_S)
    except PromApiError as exc:
        frame.prometheus_error = str(exc)
    try:
        frame.alerts = api.alerts()
    except PromApiError as exc:
        frame.alertmanager_error = str(exc)
    return frame


def _num(value: float | None) -> str:
    return "no data" if value is None else f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "no data" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "no data" if value is None or math.isnan(value) else f"{1000 * value:.0f}ms"


def line_chart(points: list[tuple[float, float]], start: float, end: float, width: int, height: int) -> list[str]:
    """A text chart of `points` (seconds) from `start` to `end`, one column per time bucket, y axis in ms."""
    if not points:
        return ["  (no requests in the last 24 h)"]
    columns: list[float | None] = [None] * width
    for t, v in points:
        i = min(width - 1, int((t - start) / max(end - start, 1e-9) * (width - 1)))
        columns[i] = v if columns[i] is None else max(v, columns[i] or 0.0)
    top = max(v for _, v in points) or 1.0
    # The row of each column's value, 1 (bottom) to height; computed once so the maximum lands on the top row.
    levels = [None if c is None else min(height, max(1, math.ceil(c / top * height))) for c in columns]
    rows = [f"{1000 * top * r / height:7.0f}│" + "".join("•" if level == r else " " for level in levels)
            for r in range(height, 0, -1)]
    first, last = (datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M") for t in (start, end))
    rows.append(f"{'ms':>7}└{'─' * width}")
    rows.append(f"{'':8}{first}{last:>{max(width - len(first), len(last) + 1)}}")
    return rows


def _health(frame: Frame) -> Text:
    if frame.prometheus_error:
        return Text(f"DOWN  Prometheus cannot be asked: {frame.prometheus_error}", style="bold red")
    up = frame.values.get("gateway_up") == 1.0
    return Text.assemble("Status: ", ("UP" if up else "DOWN", "bold green" if up else "bold red"),
                         "\nUptime (24h): ", (_percent(frame.values.get("uptime_ratio")), "bold"),
                         "\nP95 latency: ", (_ms(frame.values.get("latency_p95")), "bold"))


def _box(title: str, body: Any) -> Panel:
    return Panel(body, title=title, title_align="left")


def _alerts(frame: Frame) -> Text:
    if frame.alertmanager_error:
        return Text(f"Alertmanager cannot be asked: {frame.alertmanager_error}", style="red")
    if not frame.alerts:
        return Text("none active")
    lines = []
    for alert in frame.alerts[:8]:
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        since = str(alert.get("startsAt", ""))[11:16]
        lines.append(f"[{labels.get('severity', '?')}] {since} {labels.get('alertname', '?')}: "
                     f"{notes.get('summary', '')}")
    return Text("\n".join(lines))


def frame_renderable(frame: Frame) -> Group:
    stamp = datetime.fromtimestamp(frame.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = Text(f"CLAWDBOT TELEMETRY   {stamp}   (queries at {frame.at:.3f})", style="bold")
    v = frame.values
    if frame.prometheus_error:
        tasks = sessions = queues = Text("DOWN")
        chart = Text("DOWN")
    else:
        tasks = Text(f"✓ Completed (24h): {_num(v['completed'])}\n… In progress: {_num(v['in_progress'])}\n"
                     f"✗ Failed (24h): {_num(v['failed'])}\n□ Pending validation: {_num(v['pending_validation'])}")
        sessions = Text("\n".join(
            f"{kind.capitalize() + ':':6}{frame.sessions.get(kind, 0.0):.0f}"
            + (f"/{SESSION_LIMITS[kind]}" if kind in SESSION_LIMITS else "")
            for kind in ("main", "sub", "cron")))
        queues = Text(f"Spawn: {_num(v['queue_spawn'])}\nInbox: {_num(v['queue_inbox'])}\n"
                      f"Processing: {_num(v['queue_processing'])}")
        chart = Text("\n".join(line_chart(frame.latency, frame.at - _CHART_HOURS * 3600, frame.at,
                                           _FRAME_WIDTH - 16, 6)))
    pair = Table.grid(expand=True, padding=(0, 1))
    pair.add_column(ratio=1)
    pair.add_column(ratio=1)
    pair.add_row(_box("SYSTEM HEALTH", _health(frame)), _box("TASK STATUS", tasks))
    lower = Table.grid(expand=True, padding=(0, 1))
    lower.add_column(ratio=1)
    lower.add_column(ratio=1)
    lower.add_row(_box("ACTIVE SESSIONS", sessions), _box("QUEUE DEPTH", queues))
    return Group(header, pair, _box("REQUEST LATENCY p95 (24h)", chart), lower,
                 _box("RECENT ALERTS (Alertmanager, active)", _alerts(frame)))


def frame_text(frame: Frame) -> str:
    """The frame as plain text (no colour, no control codes), `_FRAME_WIDTH` columns."""
    return _plain(frame_renderable(frame))


def _plain(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=_FRAME_WIDTH, no_color=True, color_system=None, force_terminal=False,
            legacy_windows=False).print(renderable)
    return out.getvalue()


def _tabs(current: str) -> Text:
    line = Text()
    for key, name, _uid in VIEWS:
        line.append(f" {key} {name.capitalize()} ", style="reverse" if name == current else "")
    line.append("   (1-6 or Tab: view, q: quit)")
    return line


def view_frame(api: PromApi, view: str, at: float | None = None) -> tuple[Any, bool]:
    """The renderable of `view` at `at` (now), and whether Prometheus could be asked."""
    when = time.time() if at is None else at
    if view == "overview":
        frame = collect_frame(api, when)
        return Group(_tabs(view), frame_renderable(frame)), not frame.prometheus_error
    other = collect_view(api, view, when)
    return view_renderable(other, _tabs), not other.prometheus_error


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """`read(timeout_s)`: one key pressed within the timeout, or ''. Without a terminal: never a key."""
    if not sys.stdin.isatty():
        def wait(timeout_s: float) -> str:
            time.sleep(timeout_s)
            return ""

        yield wait
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout_s: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return os.read(fd, 1).decode(errors="replace") if ready else ""

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def register_top(subparsers: Any, default_urls: Callable[[], tuple[str, str]]) -> None:
    """Add `top`; `default_urls()` gives (Prometheus, Alertmanager) when the flags are absent."""
    parser = subparsers.add_parser(
        "top", help="the design's dashboard layout, live in the terminal (Prometheus + Alertmanager)",
        description="Live overview: system health, task status, request latency (24 h), active sessions, "
        "queue depth, recent alerts. Every number is a query of the Grafana Overview dashboard. Exit status "
        "with --once: 0, or 2 when Prometheus cannot be asked (the frame still prints, showing DOWN).")
    parser.add_argument("--once", action="store_true", help="print one frame as plain text and exit")
    parser.add_argument("--view", choices=[name for _key, name, _uid in VIEWS], default="overview",
                        help="the summary view to show (first); keys 1-6 or Tab switch in the live screen")
    parser.add_argument("--interval", type=float, default=5.0, metavar="S",
                        help="seconds between refreshes (default 5)")
    parser.add_argument("--prometheus", metavar="URL", help="default: the running native stack's")
    parser.add_argument("--alertmanager", metavar="URL", help="default: the running native stack's")

    def run(args: argparse.Namespace) -> int:
        prom, alertmanager = default_urls()
        api = PromApi(args.prometheus or prom, args.alertmanager or alertmanager)
        view: str | None = args.view
        if args.once:
            if view == "overview":  # the design's layout as it is, without the tab line
                frame = collect_frame(api)
                sys.stdout.write(frame_text(frame))
                return 2 if frame.prometheus_error else 0
            renderable, asked = view_frame(api, args.view)
            sys.stdout.write(_plain(renderable))
            return 0 if asked else 2
        with _keys() as read_key, Live(view_frame(api, args.view)[0], screen=True, auto_refresh=False) as live:
            shown, due = args.view, time.monotonic() + max(args.interval, 0.5)
            while view is not None:
                key = read_key(max(due - time.monotonic(), 0.0))
                view = next_view(shown, key) if key else shown
                if view is not None and (view != shown or time.monotonic() >= due):
                    live.update(view_frame(api, view)[0], refresh=True)
                    shown, due = view, time.monotonic() + max(args.interval, 0.5)
        return 0

    parser.set_defaults(func=run)

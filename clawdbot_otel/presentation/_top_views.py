"""The design's six summary views for `clawdbot-otel top`: the Overview's layout, and the other five drawn
from the Grafana dashboards of the same name, so that `top` and Grafana show the same queries.

A view other than the Overview evaluates each Prometheus query of its dashboard at the frame's instant
and prints one line per series (the panel's legend filled in with the series' labels). Keys switch views
in the live screen: 1-6, or Tab / n for the next one; q quits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from ._dashboards import DASHBOARDS, Dashboard
from ._prom_api import PromApi, PromApiError

__all__ = ["VIEWS", "ViewFrame", "collect_view", "format_value", "legend_text", "next_view", "view_renderable"]

#: Key, name and dashboard uid of each summary view, in the design's order (the Overview is `_top`'s own).
VIEWS: tuple[tuple[str, str, str], ...] = (
    ("1", "overview", "clawdbot-overview"),
    ("2", "tasks", "clawdbot-tasks"),
    ("3", "sessions", "clawdbot-sessions"),
    ("4", "queues", "clawdbot-queues"),
    ("5", "resources", "clawdbot-resources"),
    ("6", "alerts", "clawdbot-alerts"),
)
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_MAX_SERIES = 8  # lines per panel; the rest are counted


def next_view(current: str, key: str) -> str | None:
    """The view a key selects from `current` (None: quit; `current`: a key that means nothing)."""
    names = [name for _key, name, _uid in VIEWS]
    if key in ("q", "Q"):
        return None
    if key in ("\t", "n"):
        return names[(names.index(current) + 1) % len(names)]
    return next((name for k, name, _uid in VIEWS if k == key), current)


def format_value(value: float) -> str:
    """How a view prints a number (a test formats Prometheus' own answer the same way)."""
    if math.isnan(value):
        return "NaN"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"


def legend_text(legend: str, labels: dict[str, str]) -> str:
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), legend).strip() or "value"


@dataclass(slots=True)
class ViewFrame:
    """One evaluation of a view's queries at `at`: per panel title, (series legend, value) lines."""

    name: str
    at: float
    panels: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    prometheus_error: str = ""


def _dashboard(name: str) -> Dashboard:
    uid = next(uid for _key, n, uid in VIEWS if n == name)
    return next(d for d in DASHBOARDS if d.uid == uid)


def collect_view(api: PromApi, name: str, at: float) -> ViewFrame:
    frame = ViewFrame(name, at)
    try:
        for panel in _dashboard(name).panels:
            if panel.datasource != "prometheus":
                continue  # log panels are for Grafana and `clawdbot-otel logs search`
            lines = frame.panels.setdefault(panel.title, [])
            for expr, legend in panel.queries:
                lines.extend((legend_text(legend, s.labels), s.value) for s in api.instant(expr, at))
    except PromApiError as exc:
        frame.prometheus_error = str(exc)
    return frame


def view_renderable(frame: ViewFrame, tabs: Callable[[str], Text]) -> Group:
    stamp = datetime.fromtimestamp(frame.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = Text(f"CLAWDBOT TELEMETRY / {frame.name.upper()}   {stamp}   (queries at {frame.at:.3f})",
                  style="bold")
    if frame.prometheus_error:
        return Group(tabs(frame.name), header, Text(f"DOWN  Prometheus cannot be asked: {frame.prometheus_error}"))
    boxes = []
    for title, lines in frame.panels.items():
        shown = sorted(lines, key=lambda line: line[0])[:_MAX_SERIES]
        body = "\n".join(f"{legend}: {format_value(value)}" for legend, value in shown) or "no data"
        if len(lines) > _MAX_SERIES:
            body += f"\n(+{len(lines) - _MAX_SERIES} more series)"
        boxes.append(Panel(Text(body), title=title, title_align="left"))
    return Group(tabs(frame.name), header, *boxes)

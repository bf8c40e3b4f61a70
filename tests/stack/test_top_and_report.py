"""`clawdbot-otel top --once` and `clawdbot-otel report` against the live stack after the demo.

Each printed number is checked against the same query (clawdbot_otel.presentation's definitions) asked of
Prometheus directly at the instant the command printed, so a wrong query, a wrong label or a wrong
rendering shows. The HTML report is rendered in Debian's headless Chromium and screenshotted.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from clawdbot_otel.presentation import DASHBOARDS, KPIS, OVERVIEW
from clawdbot_otel.presentation._top_views import VIEWS, format_value, legend_text
from clawdbot_otel.stack import repo_root

from .conftest import DemoRun, RunningStack, prom_query, wait_for
from .test_jaeger_ui import CHROMIUM_FLAGS, DOCS_SCREENSHOT, chromium_path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def _value(stack: RunningStack, promql: str, at: float) -> float | None:
    result = prom_query(stack, promql, at)
    if not result or math.isnan(float(result[0]["value"][1])):
        return None
    return float(result[0]["value"][1])


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


def _screenshot(page_file: Path, capsys: pytest.CaptureFixture[str], check: Callable[[Page], None], *,
                width: int = 1120, height: int = 900) -> None:
    """Open `page_file` in headless Chromium, run `check` on it, save a screenshot next to it (and
    docs/<its name>.png with CLAWDBOT_OTEL_DOCS_SCREENSHOTS=1); print the paths."""
    shot = page_file.with_suffix(".png")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.as_uri())
            check(page)
            page.screenshot(path=str(shot), full_page=True)
            with capsys.disabled():
                print(f"\nscreenshot: {shot}")
            if os.environ.get(DOCS_SCREENSHOT) == "1":
                docs = repo_root() / "docs" / shot.name
                page.screenshot(path=str(docs))
                with capsys.disabled():
                    print(f"docs screenshot: {docs}")
        finally:
            browser.close()


def test_top_once_prints_the_overview_queries_values(
    stack: RunningStack, demo_run: DemoRun, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The p95 stat is a recording rule: wait for its first evaluation after the demo.
    wait_for(lambda: prom_query(stack, OVERVIEW["latency_p95"].promql), 120, 2, "the p95 latency rule")
    run = _cli("top", "--once", "--prometheus", stack.prometheus, "--alertmanager", stack.info.alertmanager_url)
    assert run.returncode == 0, run.stdout + run.stderr
    frame = run.stdout
    print(frame)
    at = float(re.search(r"queries at (\d+\.\d+)", frame)[1])  # type: ignore[index]

    def shown(key: str, fmt: str) -> str:
        value = _value(stack, OVERVIEW[key].promql, at)
        return "no data" if value is None else fmt.format(value)

    up = _value(stack, OVERVIEW["gateway_up"].promql, at)
    assert ("Status: UP" if up == 1.0 else "Status: DOWN") in frame
    uptime = _value(stack, OVERVIEW["uptime_ratio"].promql, at)
    assert "Uptime (24h): " + ("no data" if uptime is None else f"{100 * uptime:.1f}%") in frame
    p95 = _value(stack, OVERVIEW["latency_p95"].promql, at)
    assert "P95 latency: " + ("no data" if p95 is None else f"{1000 * p95:.0f}ms") in frame
    for label, key in (("Completed (24h)", "completed"), ("In progress", "in_progress"), ("Failed (24h)", "failed"),
                       ("Pending validation", "pending_validation"), ("Spawn", "queue_spawn"),
                       ("Inbox", "queue_inbox"), ("Processing", "queue_processing")):
        assert f"{label}: {shown(key, '{:.0f}')}" in frame, (label, frame)
    sessions = {r["metric"].get("type"): float(r["value"][1]) for r in prom_query(stack, OVERVIEW["sessions"].promql, at)}
    for kind, limit in (("main", "/4"), ("sub", "/8"), ("cron", "")):
        assert re.search(rf"{kind.capitalize()}:\s*{sessions.get(kind, 0.0):.0f}{limit}\b", frame), (kind, frame)
    # The demo left completed tasks: a frame of zeros would not test much.
    assert (_value(stack, OVERVIEW["completed"].promql, at) or 0) > 0
    assert "REQUEST LATENCY" in frame and "•" in frame  # the 24 h chart has points
    page_file = tmp_path / "top.html"
    page_file.write_text(f"<!doctype html><meta charset='utf-8'><pre style='font-size:13px'>{html.escape(frame)}</pre>")
    _screenshot(page_file, capsys, lambda page: page.get_by_text("CLAWDBOT TELEMETRY").wait_for(), width=820,
                height=400)


@pytest.mark.parametrize("view", ["tasks", "sessions", "queues", "resources"])
def test_top_once_prints_each_views_dashboard_queries(stack: RunningStack, demo_run: DemoRun, view: str) -> None:
    """The other summary views: every series of every panel of the view's Grafana dashboard, as Prometheus
    answers the same query at the printed instant."""
    run = _cli("top", "--once", "--view", view, "--prometheus", stack.prometheus, "--alertmanager",
               stack.info.alertmanager_url)
    assert run.returncode == 0, run.stdout + run.stderr
    frame = run.stdout
    assert f"CLAWDBOT TELEMETRY / {view.upper()}" in frame
    at = float(re.search(r"queries at (\d+\.\d+)", frame)[1])  # type: ignore[index]
    uid = next(u for _k, name, u in VIEWS if name == view)
    [dashboard] = [d for d in DASHBOARDS if d.uid == uid]
    checked = 0
    for panel in dashboard.panels:
        assert panel.title in frame, (panel.title, frame)
        expected = sorted((legend_text(legend, r["metric"]), float(r["value"][1]))
                          for expr, legend in panel.queries for r in prom_query(stack, expr, at))
        for legend, value in expected[:8]:
            assert f"{legend}: {format_value(value)}" in frame, (panel.title, legend, value, frame)
            checked += 1
    assert checked, f"the {view} view printed no series after the demo:\n{frame}"


def test_report_json_every_kpi_equals_its_query(stack: RunningStack, demo_run: DemoRun) -> None:
    run = _cli("report", "--since", "1h", "--format", "json", "--prometheus", stack.prometheus, "--budget-usd", "100")
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    at = report["evaluated_at"]
    assert [row["kpi"] for row in report["kpis"]] == [kpi.name for kpi in KPIS]
    no_data = []
    for row in report["kpis"]:
        direct = _value(stack, row["query"], at)
        assert row["value"] == direct, row
        if direct is None:
            assert row["verdict"] == "no data" and row["reason"].startswith("no data: "), row
            no_data.append(row["kpi"])
        else:
            assert row["verdict"] in {"met", "warning", "breached"}, row
    print(f"KPIs without data after the demo: {no_data}")
    assert not no_data, no_data
    assert report["top_models_by_tokens"] and report["tool_error_rates"]
    assert all(chart["points"] for chart in report["charts"]), [c["title"] for c in report["charts"] if not c["points"]]


def test_report_html_renders_its_charts_in_chromium(
    stack: RunningStack, demo_run: DemoRun, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    page_file = tmp_path / "report.html"
    run = _cli("report", "--since", "1h", "--format", "html", "--out", str(page_file), "--prometheus", stack.prometheus)
    assert run.returncode == 0, run.stderr

    def check(page: Page) -> None:
        charts = page.locator("svg polyline")
        assert charts.count() == 4
        assert all(len((charts.nth(i).get_attribute("points") or "").split()) > 1 for i in range(4))
        assert page.locator("h1").inner_text().startswith("Clawdbot report: last 1h")

    _screenshot(page_file, capsys, check)


def test_a_dead_prometheus_is_down_in_top_and_one_line_in_report() -> None:
    dead = f"http://127.0.0.1:{_dead_port()}"
    top = _cli("top", "--once", "--prometheus", dead, "--alertmanager", dead)
    assert top.returncode == 2 and "Traceback" not in top.stdout + top.stderr
    assert "DOWN  Prometheus cannot be asked" in top.stdout
    report = _cli("report", "--prometheus", dead)
    assert report.returncode == 2 and report.stdout == ""
    assert report.stderr.count("\n") == 1 and report.stderr.startswith("clawdbot-otel report: "), report.stderr

"""The real Jaeger UI in a real browser, against the native stack after the demo.

Debian's Chromium (apt-get install chromium; scripts/test installs it), headless, driven by Playwright from
PyPI through `executable_path` (Playwright's own browser download cannot work here). A user's path: search
by service, open a trace holding request -> session -> tool_call spans, read the span names the catalogue
gives them, the GenAI tags at the top of a span's tags, and the trace's link to its logs. Screenshots are
saved under the test's temporary folder and their paths printed; with CLAWDBOT_OTEL_DOCS_SCREENSHOTS=1 the
trace view is also written to docs/jaeger-ui.png (the picture of docs/where-to-look.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Response, sync_playwright

from clawdbot_otel.conventions import SPAN_CATEGORIES_BY_NAME, SPAN_CATEGORY_ATTRIBUTE
from clawdbot_otel.stack import repo_root

from .conftest import DemoRun, RunningStack, jaeger_spans, logsql, parent_of, wait_for

pytestmark = pytest.mark.stack

# The flags that work in this sandbox: no GPU, no setuid sandbox, nothing fetched in the background.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = "CLAWDBOT_OTEL_DOCS_SCREENSHOTS"


def chromium_path() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(found, os.X_OK):
        pytest.fail("Debian's Chromium is not installed: `apt-get install -y chromium` (scripts/test does it)",
                    pytrace=False)
    return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile (--user-data-dir under the test's temporary folder)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 760}, timezone_id="UTC",
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jaeger-ui-screenshots")


class ApiCalls:
    """The Jaeger API requests the page made, with their HTTP status."""

    def __init__(self, page: Page, base: str) -> None:
        self.base = base
        self.calls: list[tuple[str, int]] = []
        page.on("response", self._record)

    def _record(self, response: Response) -> None:
        if response.url.startswith(f"{self.base}/api/"):
            self.calls.append((urllib.parse.urlsplit(response.url).path, response.status))

    def statuses(self, path: str) -> set[int]:
        return {status for called, status in self.calls if called == path}


def _shot(page: Page, folder: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    path = folder / name
    page.screenshot(path=str(path))
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


def catalogue_name(category: str, tags: dict[str, Any]) -> str:
    """The span name the catalogue's template gives a span of `category` with these tags."""
    parts = string.Formatter().parse(SPAN_CATEGORIES_BY_NAME[category].span_name)
    return "".join(literal + (str(tags.get(key, "")) if key else "") for literal, key, _f, _c in parts).strip()


def _connected_trace(stack: RunningStack, demo_run: DemoRun) -> tuple[str, list[dict[str, Any]]]:
    """A demo trace whose tool_call span's parent is a session span whose parent is the request span."""
    def find() -> tuple[str, list[dict[str, Any]]] | None:
        spans = jaeger_spans(stack, demo_run.service)
        parent = parent_of(spans)

        def category(span: dict[str, Any] | None) -> str | None:
            return None if span is None else span["tags_map"].get(SPAN_CATEGORY_ATTRIBUTE)

        for tool in spans:
            session = parent(tool)
            request = parent(session)
            if session and request and (category(tool), category(session), category(request)) == (
                    "tool_call", "session", "request"):
                return tool["traceID"], [request, session, tool]
        return None

    found: tuple[str, list[dict[str, Any]]] = wait_for(find, 90, 2, "a request -> session -> tool_call trace")
    return found


def test_search_by_service_finds_the_demo_traces(
    browser: BrowserContext, stack: RunningStack, demo_run: DemoRun, screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = browser.new_page()
    api = ApiCalls(page, stack.jaeger)
    page.goto(f"{stack.jaeger}/search")
    assert page.title() == "Jaeger UI"
    page.locator(".ant-form-item", has_text="Service").get_by_role("combobox").click()
    page.keyboard.type(demo_run.service)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Find Traces").click()
    results = page.locator(".ResultItemTitle--title")
    results.first.wait_for()
    titles = results.all_inner_texts()
    _shot(page, screenshots, "jaeger-search.png", capsys)
    request_name = catalogue_name("request", {"rpc.method": "agent"})
    assert any(t.startswith(f"{demo_run.service}: {request_name}") for t in titles), titles
    assert api.statuses("/api/services") == {200}
    assert api.statuses(f"/api/services/{demo_run.service}/operations") == {200}
    assert api.statuses("/api/traces") == {200}
    page.close()


def _tag_keys_of(page: Page, row: Locator) -> list[str]:
    """Open a span's details (a click on its bar) and its Tags table; the keys in the order shown."""
    row.locator(".span-view").click()
    detail = page.locator(".detail-row").first
    detail.locator(".AccordianKeyValues--header", has_text="Tags").first.click()
    keys: list[str] = detail.locator(".KeyValueTable--keyColumn").all_inner_texts()
    return keys


def test_a_trace_shows_request_session_tool_call_with_the_catalogues_names(
    browser: BrowserContext, stack: RunningStack, demo_run: DemoRun, screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace_id, chain = _connected_trace(stack, demo_run)
    expected = [catalogue_name(s["tags_map"][SPAN_CATEGORY_ATTRIBUTE], s["tags_map"]) for s in chain]
    assert [s["operationName"] for s in chain] == expected  # what Jaeger stored is the catalogue's name
    page = browser.new_page()
    api = ApiCalls(page, stack.jaeger)
    page.goto(f"{stack.jaeger}/trace/{trace_id}")
    title = page.locator(".TracePageHeader--title")
    title.wait_for()
    assert title.inner_text().startswith(f"{demo_run.service}: {expected[0]}")
    rows = page.locator(".span-row")
    names = rows.locator(".endpoint-name").all_inner_texts()
    positions = [names.index(name) for name in expected]
    assert positions == sorted(positions), (expected, names)
    # The tree: each span one level deeper than its parent.
    depths = [rows.nth(i).locator(".SpanTreeOffset--indentGuide").count() for i in positions]
    assert depths[0] < depths[1] < depths[2], (expected, depths)
    assert api.statuses(f"/api/traces/{trace_id}") == {200}

    # A span's tags open with its GenAI attributes (ui-config.json's topTagPrefixes): the session span's
    # (agent, model, tokens), then, with the session's details closed again, the tool span's.
    for row, span in ((positions[1], chain[1]), (positions[2], chain[2])):
        keys = _tag_keys_of(page, rows.nth(row))
        genai = sorted(k for k in span["tags_map"] if k.startswith("gen_ai."))
        assert len(genai) >= 3 and keys[: len(genai)] == genai, keys
        if row == positions[1]:
            rows.nth(row).locator(".span-view").click()
    assert page.locator(".detail-row").count() == 1
    _shot(page, screenshots, "jaeger-trace-tool.png", capsys)
    if os.environ.get(DOCS_SCREENSHOT) == "1":
        docs = repo_root() / "docs" / "jaeger-ui.png"
        page.screenshot(path=str(docs))
        with capsys.disabled():
            print(f"docs screenshot: {docs}")

    page.close()


def test_a_traces_logs_link_opens_its_logs_in_the_log_store(
    browser: BrowserContext, stack: RunningStack, demo_run: DemoRun, screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The icon beside a trace's title opens VictoriaLogs' web UI on `trace_id:<id>` over 30 days, showing
    exactly the log records a LogsQL query for that trace id returns."""
    def a_logged_trace() -> tuple[str, int] | None:
        rows = logsql(stack.victorialogs, f'_time:1h "service.name":="{demo_run.service}" trace_id:* | '
                      "stats by (trace_id) count() records | sort by (records desc) | limit 1")
        return (rows[0]["trace_id"], int(rows[0]["records"])) if rows else None

    trace_id, records = wait_for(a_logged_trace, 60, 2, "a demo trace with log records in VictoriaLogs")
    page = browser.new_page()
    page.goto(f"{stack.jaeger}/trace/{trace_id}")
    link = page.locator("a.TracePageHeader--back[target=_blank]")
    assert link.get_attribute("title") == "Logs of this trace (VictoriaLogs)"
    with browser.expect_page() as opened:
        link.click()
    logs = opened.value
    assert logs.url.startswith(f"{stack.victorialogs}/select/vmui/"), logs.url
    logs.get_by_text("Total logs returned:").wait_for()
    query_box = logs.locator("textarea").first
    assert query_box.input_value() == f"trace_id:{trace_id}"
    assert logs.get_by_text("Last 30 days").count() >= 1
    shown = re.search(r"Total logs returned:\s*(\d+)", logs.locator("body").inner_text())
    assert shown and int(shown[1]) == records, shown
    _shot(logs, screenshots, "vmui-trace-logs.png", capsys)
    logs.close()
    page.close()


def test_the_page_is_the_real_ui_with_this_projects_config(stack: RunningStack) -> None:
    """Not the placeholder ("This is not the Jaeger UI you are looking for!"): index.html with the UI config
    of deploy/jaeger injected, its log-store link moved to this stack's ports."""
    with urllib.request.urlopen(f"{stack.jaeger}/search", timeout=10) as resp:
        html = resp.read().decode()
    assert "not the Jaeger UI you are looking for" not in html
    assert "<title>Jaeger UI</title>" in html
    config, _end = json.JSONDecoder().raw_decode(html, html.index("JAEGER_CONFIG = ") + len("JAEGER_CONFIG = "))
    assert config["topTagPrefixes"][0] == "gen_ai."
    (logs_link,) = [p["url"] for p in config["linkPatterns"] if p["type"] == "traces"]
    assert logs_link.startswith(f"{stack.victorialogs}/select/vmui/#/?query=trace_id%3A#{{traceID}}"), logs_link

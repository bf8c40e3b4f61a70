"""The shared query definitions: valid PromQL, embedded verbatim in the Overview, verdicts on the right side."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from clawdbot_otel.presentation import DASHBOARDS, KPIS, OVERVIEW
from clawdbot_otel.presentation._queries import (
    ALERT_ACTIVATIONS,
    ALERT_LAST_ACTIVE,
    CHARTS,
    TOOL_ERROR_RATES,
    TOP_MODELS_BY_COST,
    TOP_MODELS_BY_TOKENS,
)
from clawdbot_otel.presentation._report import kpi_query

from .test_dashboards import _promtool


@pytest.mark.tools
def test_every_top_and_report_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = [q.promql for q in OVERVIEW.values()] + [promql for _, _, promql in CHARTS]
    for window in ("1h", "24h", "7d"):
        exprs += [kpi_query(kpi, window, 100.0) for kpi in KPIS]
        exprs += [t.replace("{w}", window) for t in (ALERT_ACTIVATIONS, ALERT_LAST_ACTIVE, TOOL_ERROR_RATES,
                                                     TOP_MODELS_BY_COST, TOP_MODELS_BY_TOKENS)]
    rules = [{"record": f"check:q{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    proc = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_the_overview_dashboard_shows_top_s_queries_verbatim() -> None:
    overview = next(d for d in DASHBOARDS if d.uid == "clawdbot-overview")
    shown = {expr for panel in overview.panels for expr, _ in panel.queries}
    missing = {key for key, q in OVERVIEW.items() if q.promql not in shown}
    assert not missing, missing


def test_the_design_s_four_kpi_tables_are_all_there() -> None:
    tables = [kpi.table for kpi in KPIS]
    assert {t: tables.count(t) for t in tables} == {"System Health": 4, "Task Execution": 4, "Resource": 4,
                                                      "Operational": 3}


@pytest.mark.parametrize(("name", "value", "verdict"), [
    ("Request Success Rate", 0.995, "met"), ("Request Success Rate", 0.97, "warning"),
    ("Request Success Rate", 0.90, "breached"), ("Average Latency (P95)", 0.25, "met"),
    ("Average Latency (P95)", 1.0, "warning"), ("Average Latency (P95)", 2.5, "breached"),
])
def test_verdicts_follow_the_design_s_target_and_threshold(name: str, value: float, verdict: str) -> None:
    kpi = next(k for k in KPIS if k.name == name)
    assert kpi.verdict(value) == verdict

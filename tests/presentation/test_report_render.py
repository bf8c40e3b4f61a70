"""`report`'s Markdown and CSV, printed literally from a report's data (the JSON export)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from clawdbot_otel.presentation import render_report
from clawdbot_otel.presentation._report import period_seconds

REPORT: dict[str, Any] = {
    "period": "24h", "evaluated_at": 0.0, "evaluated_at_iso": "1970-01-01T00:00:00+00:00", "prometheus": "http://p",
    "kpis": [
        {"table": "System Health", "kpi": "Request Success Rate", "target": "99%", "unit": "ratio", "value": 0.97,
         "verdict": "warning"},
        {"table": "Resource", "kpi": "Token Budget (cost / budget)", "target": "within budget", "unit": "ratio",
         "value": None, "verdict": "no data", "reason": "no data: no budget given (--budget-usd)"},
    ],
    "top_models_by_tokens": [{"model": "sonnet", "value": 1200.0}],
    "top_models_by_cost_usd": [],
    "tool_error_rates": [{"tool_name": "exec", "value": 0.25}],
    "alerts_fired": [{"alertname": "HighLatency", "severity": "WARNING", "activations": 2.0, "last_active": 5.0}],
    "charts": [],
}


def test_csv_has_one_row_per_number() -> None:
    assert render_report(REPORT, "csv").splitlines() == [
        "section,name,value,target,verdict,reason",
        "kpi:System Health,Request Success Rate,0.97,99%,warning,",
        "kpi:Resource,Token Budget (cost / budget),,within budget,no data,no data: no budget given (--budget-usd)",
        "top_models_by_tokens,sonnet,1200.0,,,",
        "tool_error_rates,exec,0.25,,,",
        "alerts_fired,HighLatency (WARNING),2.0,,,",
    ]


def test_markdown_gives_value_and_verdict_or_the_reason() -> None:
    text = render_report(REPORT, "md")
    assert "| Request Success Rate | 99% | 97.00% | warning |" in text
    assert "| Token Budget (cost / budget) | within budget | no data | no data: no budget given (--budget-usd) |" in text
    assert "## Top models by cost (USD)\n\n| model | value |\n|---|---|\n| (none) | |" in text
    assert "| HighLatency | WARNING | 2 |" in text


@pytest.mark.parametrize(("since", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800)])
def test_periods(since: str, seconds: int) -> None:
    assert period_seconds(since) == seconds


@pytest.mark.parametrize("since", ["24", "0h", "1y", "-1h"])
def test_a_bad_period_says_how_to_write_one(since: str) -> None:
    with pytest.raises(ValueError, match=re.escape("use a number and a unit, e.g. 30m, 24h, 7d")):
        period_seconds(since)

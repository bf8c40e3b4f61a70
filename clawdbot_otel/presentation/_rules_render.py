"""Prometheus rule file rendered from the catalogue's alerts and recording rules."""

from __future__ import annotations

import yaml

from ._alerts import AGGREGATION_RULES, ALERTS, KPI_RECORDING_RULES

__all__ = ["prometheus_rules_yaml"]

HEADER = (
    "# Generated from clawdbot_otel/conventions (clawdbot-otel rules > deploy/prometheus/rules/clawdbot.yml).\n"
    "# Do not edit by hand: change the catalogue and regenerate; tests check this file is current.\n"
)


def prometheus_rules_yaml() -> str:
    groups = [
        {
            "name": "clawdbot-kpis",
            "interval": "1m",
            "rules": [{"record": name, "expr": expr} for name, expr in KPI_RECORDING_RULES],
        },
        {
            "name": "clawdbot-aggregation",
            "interval": "1m",
            "rules": [{"record": name, "expr": expr} for name, expr in AGGREGATION_RULES],
        },
        {
            "name": "clawdbot-alerts",
            "rules": [
                {
                    "alert": a.name,
                    "expr": a.expr,
                    **({"for": a.for_} if a.for_ != "0s" else {}),
                    "labels": {"severity": a.severity.lower()},
                    "annotations": {
                        "summary": a.summary,
                        "design_condition": a.design_condition,
                        **({"note": a.note} if a.note else {}),
                    },
                }
                for a in ALERTS
            ],
        },
    ]
    return HEADER + yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000)

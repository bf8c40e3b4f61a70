"""Presentation: what people read, generated from the catalogue.

Grafana dashboards, Prometheus alert and KPI recording rules, and the catalogue as JSON and as
Markdown tables (CATALOGUE.md). Everything here derives from `clawdbot_otel.conventions`; nothing
below imports it.

    clawdbot-otel dashboards --write deploy/grafana/dashboards
    clawdbot-otel rules --write deploy/prometheus/rules/clawdbot.yml
"""

from __future__ import annotations

from ._alerts import ALERTS, KPI_RECORDING_RULES, AlertRule
from ._catalogue import catalogue_dict, catalogue_markdown, catalogue_names_module
from ._dashboards import DASHBOARDS, Dashboard, Panel, dashboard_json
from ._rules_render import prometheus_rules_yaml

__all__ = [
    "ALERTS",
    "DASHBOARDS",
    "KPI_RECORDING_RULES",
    "AlertRule",
    "Dashboard",
    "Panel",
    "catalogue_dict",
    "catalogue_markdown",
    "catalogue_names_module",
    "dashboard_json",
    "prometheus_rules_yaml",
]

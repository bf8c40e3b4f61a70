"""Presentation: what people read, generated from the catalogue.

Grafana dashboards, Prometheus alert and KPI recording rules, the catalogue as JSON and as
Markdown tables (CATALOGUE.md), and `logs search` over the log store. Everything here derives from
`clawdbot_otel.conventions`; nothing below imports it.

    clawdbot-otel dashboards --write deploy/grafana/dashboards
    clawdbot-otel rules --write deploy/prometheus/rules/clawdbot.yml
"""

from __future__ import annotations

from ._alerts import AGGREGATION_RULES, ALERTS, KPI_RECORDING_RULES, LONG_TERM_SERIES, AlertRule
from ._catalogue import catalogue_dict, catalogue_markdown, catalogue_names_module
from ._dashboards import DASHBOARDS, Dashboard, Panel, dashboard_json
from ._log_search import LogSearchError, LogsQuery, register_log_search, search_logs
from ._rules_render import prometheus_rules_yaml

__all__ = [
    "AGGREGATION_RULES",
    "ALERTS",
    "DASHBOARDS",
    "KPI_RECORDING_RULES",
    "LONG_TERM_SERIES",
    "AlertRule",
    "Dashboard",
    "LogSearchError",
    "LogsQuery",
    "Panel",
    "catalogue_dict",
    "catalogue_markdown",
    "catalogue_names_module",
    "dashboard_json",
    "prometheus_rules_yaml",
    "register_log_search",
    "search_logs",
]

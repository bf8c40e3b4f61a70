"""Presentation: what people read, generated from the catalogue or read from the backends.

Grafana dashboards, Prometheus alert and KPI recording rules, the catalogue as JSON and as Markdown
tables (CATALOGUE.md), `logs search` over the log store, the alert status read from Alertmanager
and Prometheus (`clawdbot-otel alerts`), and fire-drill copies of the alert files. Everything here
derives from `clawdbot_otel.conventions`; nothing below imports it.

    clawdbot-otel dashboards --write deploy/grafana/dashboards
    clawdbot-otel rules --write deploy/prometheus/rules/clawdbot.yml
    clawdbot-otel alerts [--json]
"""

from __future__ import annotations

from ._alert_drill import DrillFiles, DrillTiming, drill_alertmanager_yaml, drill_rules_yaml, write_drill_config
from ._alert_status import (
    AlertRuleState,
    AlertsReport,
    AlertsSourceError,
    FiringAlert,
    RecentAlert,
    alerts_report,
    alerts_table,
)
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
    "AlertRuleState",
    "AlertsReport",
    "AlertsSourceError",
    "Dashboard",
    "DrillFiles",
    "DrillTiming",
    "FiringAlert",
    "LogSearchError",
    "LogsQuery",
    "Panel",
    "RecentAlert",
    "alerts_report",
    "alerts_table",
    "catalogue_dict",
    "catalogue_markdown",
    "catalogue_names_module",
    "dashboard_json",
    "drill_alertmanager_yaml",
    "drill_rules_yaml",
    "prometheus_rules_yaml",
    "register_log_search",
    "search_logs",
    "write_drill_config",
]

"""Presentation: what people read, generated from the catalogue or read from the backends.

Grafana dashboards, Prometheus alert and KPI recording rules, the catalogue as JSON and as Markdown
tables (CATALOGUE.md), `logs search` over the log store, the alert status read from Alertmanager
and Prometheus (`clawdbot-otel alerts`), fire-drill copies of the alert files, and `top` and `report` over
Prometheus and Alertmanager (their queries in `_queries`, shared with the Overview dashboard). Everything here
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
from ._prom_api import PromApi, PromApiError, Sample
from ._queries import KPIS, OVERVIEW, Kpi, Query
from ._report import build_report, register_report, render_report
from ._rules_render import prometheus_rules_yaml
from ._top import collect_frame, frame_text, register_top

__all__ = [
    "AGGREGATION_RULES",
    "ALERTS",
    "DASHBOARDS",
    "KPIS",
    "KPI_RECORDING_RULES",
    "LONG_TERM_SERIES",
    "OVERVIEW",
    "AlertRule",
    "AlertRuleState",
    "AlertsReport",
    "AlertsSourceError",
    "Dashboard",
    "DrillFiles",
    "DrillTiming",
    "FiringAlert",
    "Kpi",
    "LogSearchError",
    "LogsQuery",
    "Panel",
    "PromApi",
    "PromApiError",
    "Query",
    "RecentAlert",
    "Sample",
    "alerts_report",
    "alerts_table",
    "build_report",
    "catalogue_dict",
    "catalogue_markdown",
    "catalogue_names_module",
    "collect_frame",
    "dashboard_json",
    "drill_alertmanager_yaml",
    "drill_rules_yaml",
    "frame_text",
    "prometheus_rules_yaml",
    "register_log_search",
    "register_report",
    "register_top",
    "render_report",
    "search_logs",
    "write_drill_config",
]

"""The catalogue: every metric, span category and log field of the design, as data.

Nothing else in the project writes one of these names by hand; it looks it up here.
"""

from __future__ import annotations

import difflib

from ._logs import AUDIT_CATEGORY, LOG_CATEGORIES, LOG_FIELDS, LOG_LEVELS
from ._metrics import LABELS, METRICS, OTHER, RECORDING_RULES, SELF_METRICS
from ._model import (
    ANY_VALUE,
    AttributeSpec,
    Kind,
    LabelSpec,
    LogField,
    LogLevel,
    MetricSpec,
    RecordingRule,
    SpanCategory,
    prometheus_name,
)
from ._names import CounterName, GaugeName, HistogramName, MetricName, SpanCategoryName
from ._spans import COMMON_ATTRIBUTES, CORRELATION_ATTRIBUTE, SPAN_CATEGORIES, SPAN_CATEGORY_ATTRIBUTE

__all__ = [
    "ANY_VALUE",
    "AUDIT_CATEGORY",
    "COMMON_ATTRIBUTES",
    "CORRELATION_ATTRIBUTE",
    "LABELS",
    "LOG_CATEGORIES",
    "LOG_FIELDS",
    "LOG_LEVELS",
    "METRICS",
    "METRICS_BY_NAME",
    "OTHER",
    "RECORDING_RULES",
    "SELF_METRICS",
    "SPAN_CATEGORIES",
    "SPAN_CATEGORIES_BY_NAME",
    "SPAN_CATEGORY_ATTRIBUTE",
    "AttributeSpec",
    "CounterName",
    "GaugeName",
    "HistogramName",
    "Kind",
    "LabelSpec",
    "LogField",
    "LogLevel",
    "MetricName",
    "MetricSpec",
    "RecordingRule",
    "SpanCategory",
    "SpanCategoryName",
    "nearest",
    "prometheus_name",
]

METRICS_BY_NAME: dict[str, MetricSpec] = {m.name: m for m in (*METRICS, *SELF_METRICS)}
SPAN_CATEGORIES_BY_NAME: dict[str, SpanCategory] = {c.name: c for c in SPAN_CATEGORIES}


def nearest(name: str, candidates: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """The closest names to `name`, for error messages that say what was probably meant."""
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)

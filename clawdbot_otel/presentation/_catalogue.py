"""The catalogue as JSON and as Markdown tables (CATALOGUE.md), and its names as Literal types."""

from __future__ import annotations

from typing import Any

from clawdbot_otel.conventions import (
    COMMON_ATTRIBUTES,
    LOG_CATEGORIES,
    LOG_FIELDS,
    LOG_LEVELS,
    METRICS,
    RECORDING_RULES,
    SELF_METRICS,
    SPAN_CATEGORIES,
    Kind,
    MetricSpec,
)

__all__ = ["catalogue_dict", "catalogue_markdown", "catalogue_names_module"]


def _metric_dict(m: MetricSpec) -> dict[str, Any]:
    return {
        "name": m.name,
        "otel_name": m.otel_name,
        "kind": m.kind.value,
        "unit": m.unit,
        "labels": [
            {"name": label.name, "values": sorted(label.values) or None, "description": label.description}
            for label in m.labels
        ],
        "prometheus_name": m.prometheus_name,
        "prometheus_type": m.kind.prometheus_type,
        "description": m.description,
        "collection_point": m.collection_point,
        "buckets": list(m.buckets) or None,
        "source": m.source,
        "deviation": m.deviation or None,
        "note": m.note or None,
    }


def catalogue_dict() -> dict[str, Any]:
    return {
        "metrics": [_metric_dict(m) for m in METRICS],
        "self_metrics": [_metric_dict(m) for m in SELF_METRICS],
        "recording_rules": [
            {"name": r.name, "expr": r.expr, "description": r.description, "source_metric": r.source_metric}
            for r in RECORDING_RULES
        ],
        "spans": [
            {
                "category": c.name,
                "description": c.description,
                "span_name": c.span_name,
                "span_kind": c.span_kind,
                "gen_ai_operation": c.gen_ai_operation or None,
                "captured_data": c.captured_data or None,
                "source": c.source,
                "attributes": [
                    {"key": a.key, "type": a.type, "description": a.description, "opt_in": a.opt_in}
                    for a in (*COMMON_ATTRIBUTES, *c.attributes)
                ],
            }
            for c in SPAN_CATEGORIES
        ],
        "log": {
            "levels": [
                {"name": lv.name, "value": lv.value, "otel_severity_number": lv.otel_severity_number}
                for lv in LOG_LEVELS
            ],
            "categories": [{"component": k, "description": v} for k, v in LOG_CATEGORIES.items()],
            "fields": [
                {"name": f.name, "type": f.type, "required": f.required, "description": f.description}
                for f in LOG_FIELDS
            ],
        },
    }


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _metric_rows(metrics: tuple[MetricSpec, ...]) -> list[str]:
    rows = [
        "| Metric | Kind | OTel name | Unit | Labels | Prometheus name | Description |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in metrics:
        labels = ", ".join(f"`{label.name}`" for label in m.labels) or "-"
        prom = f"`{m.prometheus_name}`" + (" ¹" if m.deviation else "")
        rows.append(
            f"| `{m.name}` | {m.kind.value} | `{m.otel_name}` | `{_escape(m.unit)}` | {labels} | {prom} "
            f"| {_escape(m.description)} |"
        )
    return rows


def catalogue_markdown() -> str:
    out: list[str] = ["### Metrics", ""]
    out += _metric_rows(METRICS)
    out += ["", "¹ Deviations and decisions:", ""]
    out += [f"- `{m.name}`: {m.note}" for m in METRICS if m.note]
    out += ["", "### Self-metrics", ""]
    out += _metric_rows(SELF_METRICS)
    out += ["", "### Recording rules", "", "| Name | Expression | Description |", "|---|---|---|"]
    out += [f"| `{r.name}` | `{_escape(r.expr)}` | {_escape(r.description)} |" for r in RECORDING_RULES]
    out += ["", "### Span categories", "", "| Category | Span name | Kind | GenAI operation | Attributes |",
            "|---|---|---|---|---|"]
    for c in SPAN_CATEGORIES:
        attrs = ", ".join(f"`{a.key}`" + ("*" if a.opt_in else "") for a in c.attributes)
        out.append(f"| `{c.name}` | `{c.span_name}` | {c.span_kind} | {c.gen_ai_operation or '-'} | {attrs} |")
    out += ["", "\\* recorded only with content capture on, redacted and truncated.", ""]
    out += ["### Log levels", "", "| Level | Value | OTel severity |", "|---|---|---|"]
    out += [f"| `{lv.name}` | {lv.value} | {lv.otel_severity_number} |" for lv in LOG_LEVELS]
    out += ["", "### Log record fields", "", "| Field | Type | Required | Description |", "|---|---|---|---|"]
    out += [f"| `{f.name}` | {f.type} | {'yes' if f.required else 'no'} | {f.description} |" for f in LOG_FIELDS]
    return "\n".join(out) + "\n"


def _literal(name: str, values: list[str], doc: str) -> str:
    lines = [f"#: {doc}", f"{name} = Literal["]
    lines += [f'    "{v}",' for v in sorted(values)]
    return "\n".join([*lines, "]"])


def catalogue_names_module() -> str:
    """The source of `clawdbot_otel/conventions/_names.py`: the catalogue's names as `Literal` types, so
    that the type checker catches a misspelled metric name or span category at a call site."""
    names = {kind: [m.name for m in (*METRICS, *SELF_METRICS) if m.kind in kinds] for kind, kinds in (
        ("counter", (Kind.COUNTER, Kind.UPDOWN_COUNTER)), ("histogram", (Kind.HISTOGRAM,)), ("gauge", (Kind.GAUGE,)))}
    blocks = [
        '"""The catalogue\'s names as types (generated by scripts/gen_catalogue.py; do not edit: a test checks it)."""',
        "from __future__ import annotations\n\nfrom typing import Literal",
        '__all__ = ["CounterName", "GaugeName", "HistogramName", "MetricName", "SpanCategoryName"]',
        _literal("CounterName", names["counter"], "Counters and up-down counters: `increment()`."),
        _literal("HistogramName", names["histogram"], "Histograms: `histogram()`."),
        _literal("GaugeName", names["gauge"], "Gauges: `gauge()` and `observe()`."),
        "#: Every metric of the catalogue.\nMetricName = CounterName | HistogramName | GaugeName",
        _literal("SpanCategoryName", [c.name for c in SPAN_CATEGORIES], "Span categories: `start_span()`."),
    ]
    return "\n\n".join(blocks) + "\n"

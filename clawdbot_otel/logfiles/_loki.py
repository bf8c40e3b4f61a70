"""Loki's per-stream retention, generated from `RETENTION_POLICY` (deploy/loki/retention.yaml).

Loki's compactor applies `retention_stream` rules to streams, i.e. to index labels only. Over OTLP our
records arrive with the level as the record's `severity_text` and the category as the log attribute
`component`, both stored as structured metadata by default, which a retention selector cannot see. So
the same per-tenant override makes Loki index them (Loki 3.7 `otlp_config.severity_text_as_label` and
a `log_attributes` rule with action `index_label`); both have few values (5 levels, about 10
components), as index labels should.

The file is a Loki runtime configuration (`-runtime-config.file`); per-tenant `overrides` start from
`limits_config`, so it changes nothing but these keys. Without multi-tenancy (`auth_enabled: false`)
the tenant is `fake`. Retention needs `compactor.retention_enabled: true` in the main configuration;
streams that match no rule keep `limits_config.retention_period`.
"""

from __future__ import annotations

from ._policy import RETENTION_POLICY, LogRetention

__all__ = ["DEFAULT_TENANT", "loki_retention_config", "loki_retention_rules"]

#: The tenant id Loki uses for every request when `auth_enabled: false`.
DEFAULT_TENANT = "fake"
COMPONENT_LABEL = "component"
LEVEL_LABEL = "severity_text"


def loki_retention_rules(policy: tuple[LogRetention, ...] = RETENTION_POLICY) -> list[dict[str, str | int]]:
    """`retention_stream` entries: one per destination; the component rule outranks the level rules."""
    rules: list[dict[str, str | int]] = []
    for row in policy:
        if row.component is not None:
            selector, priority = f'{{{COMPONENT_LABEL}="{row.component}"}}', 2
        else:
            # Case-insensitive, so other services' `warn`/`Error` fall under the same rule.
            selector, priority = f'{{{LEVEL_LABEL}=~"(?i){"|".join(row.levels)}"}}', 1
        rules.append({"selector": selector, "priority": priority, "period": f"{row.retention_hours}h"})
    return rules


def loki_retention_config(policy: tuple[LogRetention, ...] = RETENTION_POLICY, tenant: str = DEFAULT_TENANT) -> str:
    """The runtime-configuration YAML, comments included, exactly as deploy/loki/retention.yaml holds it."""
    lines = [
        "# Loki runtime configuration: per-stream log retention, generated from",
        "# clawdbot_otel/logfiles/_policy.py by `clawdbot-otel logs loki-retention`. Do not edit by hand:",
        "# change the policy and regenerate (tests/logfiles checks that the two agree).",
        "#",
        "# Load with `-runtime-config.file=<this file>` (or `runtime_config: {file: ...}` in config.yaml);",
        "# needs `compactor.retention_enabled: true`. Streams matching no rule keep",
        "# limits_config.retention_period. The tenant is `fake` when auth_enabled is false.",
        "#",
    ]
    for row in policy:
        what = f"component {row.component}" if row.component else " and ".join(row.levels)
        lines.append(f"#   {what:<18} {row.retention_hours:>5}h  ({row.destination}/ in the local log files)")
    lines += [
        "overrides:",
        f"  {tenant}:",
        "    otlp_config:",
        "      # Stream labels the selectors below need; over OTLP both arrive as structured metadata.",
        "      severity_text_as_label: true",
        "      log_attributes:",
        "        - action: index_label",
        f"          attributes: [{COMPONENT_LABEL}]",
        "    retention_stream:",
    ]
    for rule in loki_retention_rules(policy):
        lines += [
            f"      - selector: '{rule['selector']}'",
            f"        priority: {rule['priority']}",
            f"        period: {rule['period']}",
        ]
    return "\n".join(lines) + "\n"

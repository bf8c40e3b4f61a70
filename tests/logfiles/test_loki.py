"""deploy/loki/retention.yaml: generated from the retention policy, and matching how our logs reach Loki."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from clawdbot_otel.conventions import LOG_LEVELS
from clawdbot_otel.logfiles import RETENTION_POLICY, loki_retention_config
from clawdbot_otel.testing import capture_telemetry

RETENTION_FILE = Path(__file__).resolve().parents[2] / "deploy" / "loki" / "retention.yaml"
_MATCHER = re.compile(r'(\w+)(=~|=)"([^"]*)"')


def test_the_file_is_the_generated_one() -> None:
    assert RETENTION_FILE.read_text() == loki_retention_config(), (
        "deploy/loki/retention.yaml is out of date with clawdbot_otel/logfiles/_policy.py: regenerate it with "
        "`clawdbot-otel logs loki-retention > deploy/loki/retention.yaml`"
    )


def loki_retention_hours(rules: list[dict[str, object]], labels: dict[str, str]) -> int | None:
    """The period Loki's compactor applies to a stream (RetentionPeriodFor in pkg/compactor/retention)."""
    best: tuple[int, int] | None = None  # (priority, hours)
    for rule in rules:
        matchers = _MATCHER.findall(str(rule["selector"]))
        if not all(
            re.fullmatch(value, labels.get(name, "")) if op == "=~" else labels.get(name, "") == value
            for name, op, value in matchers
        ):
            continue
        candidate = (int(rule["priority"]), int(str(rule["period"]).removesuffix("h")))  # type: ignore[call-overload]
        # higher priority wins; on equal priority the shorter period
        if best is None or candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] < best[1]):
            best = candidate
    return None if best is None else best[1]


def test_each_stream_gets_its_policy_retention() -> None:
    tenant = yaml.safe_load(RETENTION_FILE.read_text())["overrides"]["fake"]
    rules = tenant["retention_stream"]
    by_level = {level: row.retention_hours for row in RETENTION_POLICY for level in row.levels}
    audit_hours = next(row.retention_hours for row in RETENTION_POLICY if row.component == "audit")
    for level in LOG_LEVELS:
        for component in ("gateway", "scheduler"):
            labels = {"service_name": "clawdbot-gateway", "severity_text": level.name, "component": component}
            assert loki_retention_hours(rules, labels) == by_level[level.name], labels
        audit_labels = {"service_name": "clawdbot-gateway", "severity_text": level.name, "component": "audit"}
        assert loki_retention_hours(rules, audit_labels) == audit_hours
    assert loki_retention_hours(rules, {"severity_text": "warn"}) == by_level["WARN"]  # other services' spelling
    assert loki_retention_hours(rules, {"service_name": "x"}) is None  # limits_config.retention_period applies
    for rule in rules:
        assert int(rule["period"].removesuffix("h")) >= 24, "Loki rejects periods under 24h"


def test_the_selectors_labels_are_indexed_from_what_we_send() -> None:
    otlp = yaml.safe_load(RETENTION_FILE.read_text())["overrides"]["fake"]["otlp_config"]
    assert otlp["severity_text_as_label"] is True
    assert otlp["log_attributes"] == [{"action": "index_label", "attributes": ["component"]}]
    with capture_telemetry() as cap:
        cap.telemetry.log("WARN", "gateway", "slow")
        [record] = cap.otlp_logs()
    assert record.log_record.severity_text == "WARN"
    assert (record.log_record.attributes or {})["component"] == "gateway"

"""The design's two metric retentions: raw samples 7 days, aggregated series 90 days in a second Prometheus
fed with exactly the recording rules' outputs (the live check is tests/stack/test_long_term_metrics.py)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from clawdbot_otel.conventions import METRICS
from clawdbot_otel.presentation import AGGREGATION_RULES, KPI_RECORDING_RULES, LONG_TERM_SERIES

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"


def _keep_regex() -> str:
    [remote] = yaml.safe_load(PROMETHEUS.read_text())["remote_write"]
    [relabel] = remote["write_relabel_configs"]
    assert (relabel["action"], relabel["source_labels"]) == ("keep", ["__name__"])
    return str(relabel["regex"])


def test_the_remote_write_keeps_the_catalogues_recording_rules() -> None:
    assert _keep_regex() == LONG_TERM_SERIES, (
        "deploy/prometheus/prometheus.yml's keep regex drifted from clawdbot_otel.presentation.LONG_TERM_SERIES"
    )


def test_only_aggregated_series_are_kept_long() -> None:
    keep = re.compile(_keep_regex())  # Prometheus anchors relabel regexes at both ends
    for name, _expr in (*KPI_RECORDING_RULES, *AGGREGATION_RULES):
        assert keep.fullmatch(name), name
    for metric in METRICS:
        for suffix in ("", "_bucket", "_count", "_sum"):
            assert not keep.fullmatch(metric.prometheus_name + suffix), f"raw series {metric.prometheus_name}"


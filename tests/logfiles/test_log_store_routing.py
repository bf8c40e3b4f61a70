"""otel-collector/logs-victorialogs.yaml: generated from the retention policy, and routing every record to
exactly one retention class (the live check against the real collector is tests/stack/test_log_store.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from clawdbot_otel.logfiles import RETENTION_POLICY, collector_log_routing_config, log_store_classes

ROUTING_FILE = Path(__file__).resolve().parents[2] / "otel-collector" / "logs-victorialogs.yaml"


def test_the_file_is_the_generated_one() -> None:
    assert ROUTING_FILE.read_text() == collector_log_routing_config(), (
        "otel-collector/logs-victorialogs.yaml is out of date with clawdbot_otel/logfiles/_policy.py: regenerate "
        "it with `clawdbot-otel logs retention-config > otel-collector/logs-victorialogs.yaml`"
    )


def test_one_pipeline_per_class_with_its_own_filter_and_exporter() -> None:
    config = yaml.safe_load(ROUTING_FILE.read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {f"logs/{row.destination}" for row in RETENTION_POLICY}
    for cls in log_store_classes():
        pipeline = pipelines[f"logs/{cls.row.destination}"]
        assert pipeline["processors"] == ["memory_limiter", f"filter/{cls.row.destination}", "batch"]
        assert pipeline["exporters"] == [f"otlp_http/{cls.row.destination}"]
        exporter = config["exporters"][f"otlp_http/{cls.row.destination}"]
        assert exporter["sending_queue"] == {"enabled": True, "storage": "file_storage"}
    # VictoriaLogs refuses a retention under one day
    assert all(cls.row.retention_hours >= 24 for cls in log_store_classes())

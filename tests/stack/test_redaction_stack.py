"""The secrets corpus through the public API into the real stack: what the collector passed on to Jaeger,
Prometheus and the log store holds no secret, and the redacted values still say their kind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.redaction.corpus import CORPUS

from .conftest import RunningStack, http_json, logsql, wait_for

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "redaction-corpus"  # tests/redaction/drive_api.py's service name


def _kinds(text: str) -> set[str]:
    return set(re.findall(r"\[REDACTED:([a-z0-9-]+)\]", text))


def test_what_the_collector_delivers_holds_no_secret(stack: RunningStack, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_"))}
    env.update({"PYTHONPATH": str(ROOT), "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_grpc,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "CLAWDBOT_OTEL_CAPTURE_CONTENT": "1",
                "CLAWDBOT_OTEL_LOG_DIR": str(tmp_path / "logs"), "OTEL_METRIC_EXPORT_INTERVAL": "500"})
    done = subprocess.run([sys.executable, "-m", "tests.redaction.drive_api"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    # Each sample's tool span ends in error (the provider error), so tail sampling keeps those traces; its job
    # span is a trace of its own, kept or not by the hash like any other.
    def traces() -> list[dict[str, Any]] | None:
        status, body = http_json(f"{stack.jaeger}/api/traces", {"service": SERVICE, "limit": 1000, "lookback": "1h"})
        found = list(body["data"] or []) if status == 200 else []
        return found if len(found) >= len(CORPUS) else None

    def logs() -> list[dict[str, Any]] | None:
        rows = logsql(stack.victorialogs, f'_time:1h "service.name":="{SERVICE}"', limit=10000)
        return rows if len(rows) >= 3 * len(CORPUS) else None

    def series() -> list[dict[str, Any]] | None:
        status, body = http_json(f"{stack.prometheus}/api/v1/series",
                                 {"match[]": f'session_tool_calls_total{{job="{SERVICE}"}}'})
        return list(body["data"]) if status == 200 and body["data"] else None

    delivered = {
        "Jaeger": json.dumps(wait_for(traces, 60, 1, "the corpus traces in Jaeger")),
        "VictoriaLogs": json.dumps(wait_for(logs, 60, 1, "the corpus logs in VictoriaLogs")),
        "Prometheus": json.dumps(wait_for(series, 60, 1, "the corpus metric in Prometheus")),
    }
    leaks = [(store, s.kind) for store, text in delivered.items() for s in CORPUS if s.payload in text]
    assert leaks == []
    kinds = {s.kind for s in CORPUS}
    for store in ("Jaeger", "VictoriaLogs"):
        assert kinds <= _kinds(delivered[store]), (store, kinds - _kinds(delivered[store]))
    assert _kinds(delivered["Prometheus"]), "metric label values say what they hid"
    print(f"\n{len(CORPUS)} samples x 3 stores: 0 leaks; kinds in Prometheus labels: {sorted(_kinds(delivered['Prometheus']))}")

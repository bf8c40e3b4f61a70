"""Dashboards: generated from the catalogue, provisioned, and every query valid PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clawdbot_otel.dashboards import DASHBOARDS, dashboard_json

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "grafana" / "dashboards"


def test_provisioned_dashboards_are_current() -> None:
    on_disk = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    generated = {d.uid: dashboard_json(d) for d in DASHBOARDS}
    assert on_disk == generated, "stale: run `clawdbot-otel dashboards --write deploy/grafana/dashboards`"
    assert len(generated) == 6  # the design's six summary views


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus (clawdbot-otel stack build)")
    rules = [{"record": f"check:{d.uid.replace('-', '_')}:{i}", "expr": target["expr"]}
             for d in DASHBOARDS for i, target in enumerate(
                 t for p in dashboard_json(d)["panels"] for t in p["targets"])]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_panels_fit_the_grid_without_overlap() -> None:
    for d in DASHBOARDS:
        cells: set[tuple[int, int]] = set()
        for panel in dashboard_json(d)["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, (d.uid, panel["title"])
            cells |= area

"""`clawdbot-otel alerts` (the printed table, the one-line error) and the fire-drill copies of the alert files.

The command against a running Alertmanager and Prometheus is tested in tests/stack/test_alerts_live.py,
after every design alert has fired and resolved there.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clawdbot_otel.presentation import (
    ALERTS,
    AlertRuleState,
    AlertsReport,
    FiringAlert,
    RecentAlert,
    alerts_table,
    drill_alertmanager_yaml,
    drill_rules_yaml,
    write_drill_config,
)

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
NOW = 1_796_220_000.0  # 2026-12-02 14:00:00Z


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus / prometheus-alertmanager (clawdbot-otel stack build)")
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_table_says_what_fires_since_when_and_where_it_was_routed() -> None:
    report = AlertsReport(
        alertmanager_url="http://127.0.0.1:9093", prometheus_url="http://127.0.0.1:9090", window="24h",
        firing=(FiringAlert("GatewayDown", "critical", "active", NOW - 190, ("critical-immediate",),
                            {"instance": "gw-1:18789", "job": "clawdbot-gateway"}, "Gateway is down!"),
                FiringAlert("QueueBacklog", "warning", "silenced", NOW - 7300,
                            ("slack-aibot-chat", "warning-digest"), {}, "Spawn queue")),
        recent=(RecentAlert("HighErrorRate", "critical", NOW - 3600, NOW - 1800, {}),),
        rules=(AlertRuleState("GatewayDown", "critical", "firing", NOW - 220, 30, "ok", ""),
               AlertRuleState("HighMemoryUsage", "info", "inactive", None, 0, "err", "bad data")),
    )
    assert alerts_table(report, now=NOW) == """\
Firing in Alertmanager (http://127.0.0.1:9093): 2
  ALERT         SEVERITY  STATE     SINCE                             ROUTED TO                        LABELS
  GatewayDown   critical  active    2026-12-02 13:56:50Z (3m10s ago)  critical-immediate               instance=gw-1:18789 job=clawdbot-gateway
  QueueBacklog  warning   silenced  2026-12-02 11:58:20Z (2h1m ago)   slack-aibot-chat,warning-digest  -

Resolved within 24h (Prometheus http://127.0.0.1:9090): 1
  ALERT          SEVERITY  FIRST STARTED                    LAST STARTED                      LABELS
  HighErrorRate  critical  2026-12-02 13:00:00Z (1h0m ago)  2026-12-02 13:30:00Z (30m0s ago)  -

Alert rules (Prometheus http://127.0.0.1:9090): 2
  RULE             SEVERITY  STATE     ACTIVE SINCE                      FOR  HEALTH
  GatewayDown      critical  firing    2026-12-02 13:56:20Z (3m40s ago)  30s  ok
  HighMemoryUsage  info      inactive  -                                 0s   err: bad data
"""


def test_an_empty_report_says_none() -> None:
    report = AlertsReport("http://a", "http://p", "1h", (), (), ())
    assert alerts_table(report, now=NOW) == (
        "Firing in Alertmanager (http://a): 0\n  (none)\n\n"
        "Resolved within 1h (Prometheus http://p): 0\n  (none)\n\n"
        "Alert rules (Prometheus http://p): 0\n  (none)\n")


def test_a_dead_alertmanager_is_one_line_and_exit_2() -> None:
    port = _closed_port()
    proc = subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", "alerts", "--alertmanager",
                           f"http://127.0.0.1:{port}/", "--prometheus", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"clawdbot-otel alerts: Alertmanager at http://127.0.0.1:{port} is not reachable (Connection refused): "
        "start the stack (`clawdbot-otel stack up`) or point --alertmanager at yours\n")


def _alert_rules(text: str) -> dict[str, dict[str, object]]:
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}


@pytest.mark.tools
def test_drill_rules_only_shorten_the_waits_and_replace_the_thresholds_asked_for(tmp_path: Path) -> None:
    production = (RULES_DIR / "clawdbot.yml").read_text()
    drilled = drill_rules_yaml(production, thresholds={"HighMemoryUsage": 0.01})
    before, after = _alert_rules(production), _alert_rules(drilled)
    assert set(after) == {a.name for a in ALERTS}
    for name, rule in before.items():
        expected_expr = rule["expr"] if name != "HighMemoryUsage" else str(rule["expr"]).replace("> 0.85", "> 0.01")
        assert after[name]["expr"] == expected_expr
        assert after[name]["labels"] == rule["labels"]
        assert after[name].get("for") == ("5000ms" if "for" in rule else None), name
    assert {g.get("interval") for g in yaml.safe_load(drilled)["groups"]} == {"2000ms"}
    target = tmp_path / "clawdbot.yml"
    target.write_text(drilled)
    subprocess.run([_tool("promtool"), "check", "rules", str(target)], check=True, capture_output=True)
    with pytest.raises(ValueError, match="HighMemoryUsag"):
        drill_rules_yaml(production, thresholds={"HighMemoryUsag": 0.01})


@pytest.mark.tools
def test_drill_routing_sends_each_severity_to_the_productions_receivers_by_webhook(tmp_path: Path) -> None:
    files = write_drill_config(tmp_path, rules_dir=RULES_DIR, alertmanager_config=ALERTMANAGER,
                               webhook_url="http://127.0.0.1:9/hook")
    assert sorted(p.name for p in files.rules_dir.iterdir()) == sorted(p.name for p in RULES_DIR.glob("*.yml"))
    amtool = _tool("amtool")
    subprocess.run([amtool, "check-config", str(files.alertmanager_config)], check=True, capture_output=True)
    for severity in ("critical", "warning", "info"):
        routed = [subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}",
                                  f"severity={severity}", "alertname=Any"],
                                 capture_output=True, text=True, check=True).stdout
                  for config in (ALERTMANAGER, files.alertmanager_config)]
        assert routed[0] == routed[1], severity
    drilled = yaml.safe_load(files.alertmanager_config.read_text())
    production = yaml.safe_load(ALERTMANAGER.read_text())
    assert drilled["time_intervals"] == production["time_intervals"]
    assert drilled["inhibit_rules"] == production["inhibit_rules"]
    assert drilled["receivers"] == [
        {"name": r["name"], "webhook_configs": [{"url": f"http://127.0.0.1:9/hook/{r['name']}", "send_resolved": True}]}
        for r in production["receivers"]]
    assert drill_alertmanager_yaml(ALERTMANAGER.read_text(), webhook_url="http://x/") == \
        files.alertmanager_config.read_text().replace("http://127.0.0.1:9/hook", "http://x")


def test_rules_drill_writes_the_copies_and_refuses_an_unknown_alert_in_one_line(tmp_path: Path) -> None:
    def rules(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", "rules", "--drill", str(tmp_path), *args],
                              capture_output=True, text=True, check=False, timeout=60)

    proc = rules("--webhook", "http://127.0.0.1:9/x", "--threshold", "HighMemoryUsage=0.001")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr == "".join(f"wrote {tmp_path / name}\n" for name in (
        *(f"rules/{p.name}" for p in sorted(RULES_DIR.glob("*.yml"))), "alertmanager.yml"))
    expected = tmp_path / "expected"
    write_drill_config(expected, rules_dir=RULES_DIR, alertmanager_config=ALERTMANAGER,
                       webhook_url="http://127.0.0.1:9/x", thresholds={"HighMemoryUsage": 0.001})
    assert (tmp_path / "rules" / "clawdbot.yml").read_text() == (expected / "rules" / "clawdbot.yml").read_text()
    assert (tmp_path / "alertmanager.yml").read_text() == (expected / "alertmanager.yml").read_text()
    proc = rules("--threshold", "HighMemory=0.5")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "clawdbot-otel rules --drill: no such alert rule for a threshold: ['HighMemory']\n"

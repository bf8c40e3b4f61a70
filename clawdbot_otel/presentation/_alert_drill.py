"""Fire-drill copies of the alert rules and routes: the design's, with short waits and webhook receivers.

An alert is trusted once it has been seen to fire. A drill runs Prometheus and Alertmanager on copies of
deploy/prometheus/rules/*.yml and deploy/alertmanager/alertmanager.yml in which only the waiting changes:

* every non-zero `for:` becomes `for_s`, and each rule group is evaluated every `evaluation_interval_s`;
* every route's group_wait / group_interval / repeat_interval become the drill's;
* every receiver (log-only included, so that the route taken can be seen) becomes one webhook,
  `<webhook_url>/<receiver name>`, sending firing and resolved notifications;
* Prometheus re-sends alerts every `resend_delay_s` (a flag: `AlertConfig.resend_delay_s` of the launcher),
  so that a send lost while Prometheus reloads its rules is not a minute late;
* optionally, an alert's threshold (`expr ... > N`) is replaced, e.g. HighMemoryUsage=0.01 so that it
  fires on an idle machine instead of by eating memory.

Expressions (other than a replaced threshold), matchers, `continue`, time intervals and inhibit rules stay
exactly the production files'. The production files are never written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DrillFiles", "DrillTiming", "drill_alertmanager_yaml", "drill_rules_yaml", "write_drill_config"]

_THRESHOLD = re.compile(r">\s*[0-9.eE+-]+\s*$")
_HEADER = "# Fire-drill copy (clawdbot_otel.presentation.write_drill_config): NOT for production.\n"


@dataclass(frozen=True, slots=True)
class DrillTiming:
    for_s: float = 5.0
    evaluation_interval_s: float = 2.0
    group_wait_s: float = 1.0
    group_interval_s: float = 2.0
    repeat_interval_s: float = 300.0
    #: Prometheus' --rules.alert.resend-delay (a flag, not a file: the launcher's AlertConfig.resend_delay_s)
    resend_delay_s: float = 2.0


@dataclass(frozen=True, slots=True)
class DrillFiles:
    rules_dir: Path  # every *.yml of the production rules folder, drilled
    alertmanager_config: Path


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def drill_rules_yaml(rules_yaml: str, *, timing: DrillTiming = DrillTiming(),
                     thresholds: Mapping[str, float] | None = None) -> str:
    """A Prometheus rule file with the drill's `for:` and evaluation interval (and replaced thresholds)."""
    thresholds = dict(thresholds or {})
    doc: dict[str, Any] = yaml.safe_load(rules_yaml)
    for group in doc["groups"]:
        group["interval"] = _duration(timing.evaluation_interval_s)
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            if rule.get("for") not in (None, "0s"):
                rule["for"] = _duration(timing.for_s)
            if rule["alert"] in thresholds:
                expr = str(rule["expr"])
                if not _THRESHOLD.search(expr):
                    raise ValueError(f"{rule['alert']}: no `> N` threshold at the end of {expr!r}")
                rule["expr"] = _THRESHOLD.sub(f"> {thresholds.pop(rule['alert'])!r}", expr)
    if thresholds:
        raise ValueError(f"no such alert rule for a threshold: {sorted(thresholds)}")
    return _HEADER + yaml.safe_dump(doc, sort_keys=False, width=1000)


def _drill_route(route: dict[str, Any], timing: DrillTiming, *, root: bool) -> None:
    for key, seconds in (("group_wait", timing.group_wait_s), ("group_interval", timing.group_interval_s),
                         ("repeat_interval", timing.repeat_interval_s)):
        if root or key in route:
            route[key] = _duration(seconds)
    for child in route.get("routes") or ():
        _drill_route(child, timing, root=False)


def drill_alertmanager_yaml(config_yaml: str, *, webhook_url: str, timing: DrillTiming = DrillTiming()) -> str:
    """The Alertmanager configuration with the drill's intervals and a webhook per receiver."""
    doc: dict[str, Any] = yaml.safe_load(config_yaml)
    _drill_route(doc["route"], timing, root=True)
    base = webhook_url.rstrip("/")
    doc["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{base}/{r['name']}", "send_resolved": True}]}
        for r in doc["receivers"]
    ]
    return _HEADER + yaml.safe_dump(doc, sort_keys=False, width=1000)


def write_drill_config(dest: Path, *, rules_dir: Path, alertmanager_config: Path, webhook_url: str,
                       timing: DrillTiming = DrillTiming(),
                       thresholds: Mapping[str, float] | None = None) -> DrillFiles:
    """Write drilled copies of the production `rules_dir` and `alertmanager_config` under `dest`.

    Writing again (e.g. with other thresholds) replaces the rule files; Prometheus reads them on SIGHUP.
    """
    out_rules = dest / "rules"
    out_rules.mkdir(parents=True, exist_ok=True)
    remaining = dict(thresholds or {})
    sources = sorted(rules_dir.glob("*.yml"))
    for source in sources:
        text = source.read_text()
        names = {r.get("alert") for g in yaml.safe_load(text)["groups"] for r in g["rules"]}
        here = {name: value for name, value in remaining.items() if name in names}
        for name in here:
            del remaining[name]
        (out_rules / source.name).write_text(drill_rules_yaml(text, timing=timing, thresholds=here))
    if remaining:
        raise ValueError(f"no such alert rule for a threshold: {sorted(remaining)}")
    am = dest / "alertmanager.yml"
    am.write_text(drill_alertmanager_yaml(alertmanager_config.read_text(), webhook_url=webhook_url, timing=timing))
    return DrillFiles(out_rules, am)

"""What fires, since when, and where it was routed: Alertmanager's alerts and Prometheus' rule states.

Three views, read from the backends' HTTP APIs (nothing is kept here):
  firing  Alertmanager `/api/v2/alerts`: active, silenced and inhibited alerts with the receivers their
          route resolves to (Alertmanager forgets an alert once it is resolved)
  recent  Prometheus' `ALERTS` and `ALERTS_FOR_STATE` series: alerts that fired within the window and no
          longer fire, with when their first and last episode started (became pending or firing)
  rules   Prometheus `/api/v1/rules`: every alerting rule's state (inactive, pending, firing), health
          and `for:`
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AlertRuleState",
    "AlertsReport",
    "AlertsSourceError",
    "FiringAlert",
    "RecentAlert",
    "alerts_report",
    "alerts_table",
]

# Labels every alert carries that the table shows in columns of their own.
_COLUMN_LABELS = frozenset({"alertname", "severity"})


class AlertsSourceError(RuntimeError):
    """Alertmanager or Prometheus did not answer usefully; the message says which and what to do."""


@dataclass(frozen=True, slots=True)
class FiringAlert:
    alertname: str
    severity: str
    state: str  # active, silenced, inhibited or unprocessed
    starts_at: float  # epoch s
    receivers: tuple[str, ...]
    labels: dict[str, str]
    summary: str


@dataclass(frozen=True, slots=True)
class RecentAlert:
    alertname: str
    severity: str
    first_started: float | None  # epoch s when its first episode within the window became active
    last_started: float | None  # ... and its last one
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class AlertRuleState:
    name: str
    severity: str
    state: str  # inactive, pending or firing
    active_since: float | None  # epoch s of the earliest active alert of the rule
    for_s: float
    health: str
    last_error: str


@dataclass(frozen=True, slots=True)
class AlertsReport:
    alertmanager_url: str
    prometheus_url: str
    window: str
    firing: tuple[FiringAlert, ...]
    recent: tuple[RecentAlert, ...]
    rules: tuple[AlertRuleState, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(url: str, what: str, flag: str, timeout_s: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise AlertsSourceError(f"{what} at {_base(url)} answered HTTP {exc.code} for {_path(url)}: "
                                f"is {flag} the right address?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason  # "Connection refused", not "[Errno 111] ..."
        raise AlertsSourceError(f"{what} at {_base(url)} is not reachable ({reason}): start the stack "
                                f"(`clawdbot-otel stack up`) or point {flag} at yours") from None
    try:
        return json.loads(body)
    except ValueError:
        raise AlertsSourceError(f"{what} at {_base(url)} did not answer JSON for {_path(url)}: "
                                f"is {flag} the right address?") from None


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _epoch(rfc3339: str | None) -> float | None:
    if not rfc3339 or rfc3339.startswith("0001-"):
        return None
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _am_state(status: dict[str, Any]) -> str:
    if status.get("silencedBy"):
        return "silenced"
    if status.get("inhibitedBy"):
        return "inhibited"
    return str(status.get("state") or "unknown")


def _firing(alertmanager_url: str, timeout_s: float) -> tuple[FiringAlert, ...]:
    body = _get(f"{alertmanager_url}/api/v2/alerts", "Alertmanager", "--alertmanager", timeout_s)
    alerts = [
        FiringAlert(
            alertname=a["labels"].get("alertname", ""),
            severity=a["labels"].get("severity", ""),
            state=_am_state(a.get("status") or {}),
            starts_at=_epoch(a.get("startsAt")) or 0.0,
            receivers=tuple(r["name"] for r in a.get("receivers") or ()),
            labels={k: v for k, v in a["labels"].items() if k not in _COLUMN_LABELS},
            summary=(a.get("annotations") or {}).get("summary", ""),
        )
        for a in body
    ]
    return tuple(sorted(alerts, key=lambda a: (a.starts_at, a.alertname, sorted(a.labels.items()))))


def _query(prometheus_url: str, promql: str, timeout_s: float) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    body = _get(url, "Prometheus", "--prometheus", timeout_s)
    return list(body["data"]["result"])


def _series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("__name__", "alertstate")))


def _recent(prometheus_url: str, window: str, timeout_s: float) -> tuple[RecentAlert, ...]:
    # Fired within the window (raw samples: a short episode between two evaluations of a subquery is not
    # missed) and not firing now. ALERTS_FOR_STATE's value is each episode's activeAt.
    def by_series(promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {_series_key(r["metric"]): float(r["value"][1]) for r in _query(prometheus_url, promql, timeout_s)}

    fired = by_series(f'max_over_time(ALERTS{{alertstate="firing"}}[{window}])')
    now = by_series('ALERTS{alertstate="firing"}')
    first = by_series(f"min_over_time(ALERTS_FOR_STATE[{window}])")
    last = by_series(f"max_over_time(ALERTS_FOR_STATE[{window}])")
    recent = []
    for key in fired.keys() - now.keys():
        labels = dict(key)
        recent.append(RecentAlert(
            alertname=labels.get("alertname", ""), severity=labels.get("severity", ""),
            first_started=first.get(key), last_started=last.get(key),
            labels={k: v for k, v in labels.items() if k not in _COLUMN_LABELS},
        ))
    return tuple(sorted(recent, key=lambda a: (-(a.last_started or 0.0), a.alertname, sorted(a.labels.items()))))


def _rules(prometheus_url: str, timeout_s: float) -> tuple[AlertRuleState, ...]:
    body = _get(f"{prometheus_url}/api/v1/rules?type=alert", "Prometheus", "--prometheus", timeout_s)
    states = []
    for group in body["data"]["groups"]:
        for rule in group["rules"]:
            if rule.get("type") != "alerting":
                continue
            since = [t for t in (_epoch(a.get("activeAt")) for a in rule.get("alerts") or ()) if t is not None]
            states.append(AlertRuleState(
                name=rule["name"], severity=(rule.get("labels") or {}).get("severity", ""),
                state=rule.get("state", ""), active_since=min(since) if since else None,
                for_s=float(rule.get("duration") or 0), health=rule.get("health", ""),
                last_error=rule.get("lastError") or "",
            ))
    return tuple(states)


def alerts_report(alertmanager_url: str, prometheus_url: str, *, window: str = "24h",
                  timeout_s: float = 5.0) -> AlertsReport:
    """Read all three views; AlertsSourceError (one line, what to do) when a backend does not answer."""
    alertmanager_url = alertmanager_url.rstrip("/")
    prometheus_url = prometheus_url.rstrip("/")
    return AlertsReport(
        alertmanager_url=alertmanager_url, prometheus_url=prometheus_url, window=window,
        firing=_firing(alertmanager_url, timeout_s),
        recent=_recent(prometheus_url, window, timeout_s),
        rules=_rules(prometheus_url, timeout_s),
    )


# ------------------------------------------------------------------------------------------- table


def _at(epoch_s: float | None, now: float) -> str:
    if epoch_s is None:
        return "-"
    stamp = datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({_age(now - epoch_s)} ago)"


def _age(seconds: float) -> str:
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _labels(labels: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _for(seconds: float) -> str:
    return _age(seconds) if seconds else "0s"


def _grid(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)]


def alerts_table(report: AlertsReport, *, now: float | None = None) -> str:
    """The report as the text the `alerts` command prints (`now` fixes the ages, for tests)."""
    now = time.time() if now is None else now
    firing = [(a.alertname, a.severity, a.state, _at(a.starts_at, now), ",".join(a.receivers) or "-",
               _labels(a.labels)) for a in report.firing]
    recent = [(a.alertname, a.severity, _at(a.first_started, now), _at(a.last_started, now), _labels(a.labels))
              for a in report.recent]
    rules = [(r.name, r.severity, r.state, _at(r.active_since, now), _for(r.for_s),
              r.health + (f": {r.last_error}" if r.last_error else "")) for r in report.rules]
    lines = [
        f"Firing in Alertmanager ({report.alertmanager_url}): {len(firing)}",
        *_grid(("ALERT", "SEVERITY", "STATE", "SINCE", "ROUTED TO", "LABELS"), firing),
        "",
        f"Resolved within {report.window} (Prometheus {report.prometheus_url}): {len(recent)}",
        *_grid(("ALERT", "SEVERITY", "FIRST STARTED", "LAST STARTED", "LABELS"), recent),
        "",
        f"Alert rules (Prometheus {report.prometheus_url}): {len(rules)}",
        *_grid(("RULE", "SEVERITY", "STATE", "ACTIVE SINCE", "FOR", "HEALTH"), rules),
    ]
    return "\n".join(lines) + "\n"

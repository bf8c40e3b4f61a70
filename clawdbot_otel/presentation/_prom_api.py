"""A small client for Prometheus' HTTP query API and Alertmanager's alerts API (stdlib only)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["PromApi", "PromApiError", "Sample"]


class PromApiError(Exception):
    """Prometheus or Alertmanager could not be asked (down, refused, bad answer)."""


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class PromApi:
    prometheus_url: str
    alertmanager_url: str = ""
    timeout_s: float = 5.0

    def _get(self, url: str) -> Any:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PromApiError(f"{url.split('?', maxsplit=1)[0]}: {reason}") from exc

    def _api(self, path: str, params: dict[str, str]) -> Any:
        body = self._get(f"{self.prometheus_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}")
        if body.get("status") != "success":
            raise PromApiError(f"Prometheus: {body.get('error', body)}")
        return body["data"]

    def instant(self, promql: str, at: float) -> list[Sample]:
        """The query's vector at Unix time `at` (NaN samples kept: 0/0 is "no events")."""
        data = self._api("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def scalar(self, promql: str, at: float) -> float | None:
        """The single value of a query, or None when it returned no series or NaN."""
        samples = self.instant(promql, at)
        if not samples or math.isnan(samples[0].value):
            return None
        return samples[0].value

    def series(self, promql: str, start: float, end: float, step_s: float) -> list[tuple[float, float]]:
        """The first series of a range query as (time, value) points, NaN points dropped."""
        data = self._api("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                  "step": f"{step_s:g}"})
        if not data["result"]:
            return []
        points = ((float(t), float(v)) for t, v in data["result"][0]["values"])
        return [(t, v) for t, v in points if not math.isnan(v)]

    def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's active alerts (`/api/v2/alerts`), newest first."""
        if not self.alertmanager_url:
            return []
        found: list[dict[str, Any]] = self._get(f"{self.alertmanager_url.rstrip('/')}/api/v2/alerts")
        return sorted(found, key=lambda a: str(a.get("startsAt", "")), reverse=True)

"""Folding source values onto the catalogue's enumerated label values, before they reach the facade.

The facade folds unknown values into `other` too, but counts each as a dropped measurement (and
raises in strict mode): a status word the scheduler invents is the source's business, not a
telemetry bug, so the collection points map it themselves.
"""

from __future__ import annotations

from clawdbot_otel.conventions import METRICS_BY_NAME, OTHER

__all__ = ["OTHER", "enum_value"]


def enum_value(metric: str, label: str, value: str | None) -> str:
    """`value` if the catalogue allows it for `metric`'s `label`, else `other`."""
    spec = METRICS_BY_NAME[metric]
    for lb in spec.labels:
        if lb.name == label:
            if not lb.enumerated:
                raise ValueError(f"label {label} of {metric} is free-form, not an enumeration")
            return value if value in lb.values else OTHER
    raise ValueError(f"metric {metric} has no label {label!r}")

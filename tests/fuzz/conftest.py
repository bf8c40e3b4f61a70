"""Hypothesis profiles for the fuzz tests.

`fast` (default) keeps each property to a few seconds so the suite stays quick; `CLAWDBOT_OTEL_FUZZ=long`
runs 50x as many examples (minutes) to look for new edges. Hypothesis' example database is off (nothing
is written into the repository): a failure prints the example that reproduces it, and each one found is
kept as a regular test (`test_fuzz_findings.py`).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "derandomize": False,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large]}
settings.register_profile("fast", max_examples=60, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=3000, **_COMMON)  # type: ignore[arg-type]
settings.load_profile("long" if os.environ.get("CLAWDBOT_OTEL_FUZZ") == "long" else "fast")

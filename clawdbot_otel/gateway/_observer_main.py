"""`python -m clawdbot_otel.gateway._observer_main`: the proxy's observer process (see `_observer_process`)."""

from __future__ import annotations

from ._observer_process import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())

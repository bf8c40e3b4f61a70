"""The default `Telemetry` instance behind the module-level functions (`clawdbot_otel.increment`, ...).

Its own leaf, so that what needs the default instance (the audit channel) does not import the package
root and with it everything else.
"""

from __future__ import annotations

from ._facade import Telemetry

__all__ = ["DEFAULT_TELEMETRY"]

DEFAULT_TELEMETRY = Telemetry()

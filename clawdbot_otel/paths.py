"""Where clawdbot-otel keeps its files: the XDG state and cache folders, resolved from the environment.

A leaf: setup, log files, the stack and the simulation all ask here, so none of them imports another
just for a path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "state_dir"]

APP_DIR = "clawdbot-otel"


def state_dir() -> Path:
    """`$XDG_STATE_HOME/clawdbot-otel`, else `~/.local/state/clawdbot-otel`: telemetry files, logs, workspaces."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / APP_DIR


def cache_dir() -> Path:
    """`$CLAWDBOT_OTEL_CACHE`, else `~/.cache/clawdbot-otel`: built servers and the stack's data."""
    env = os.environ.get("CLAWDBOT_OTEL_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / APP_DIR
    return base.resolve()

"""Simulation: a stand-in for OpenClaw, for demos and tests without a real gateway.

The embedded agent runtime answers the gateway protocol with the real frame shapes and writes the
scheduler folders of a workspace of its own; the demo client drives realistic load through any
gateway. Nothing here imports the telemetry: what it does is observed from outside, exactly as a
real OpenClaw gateway is.

    from clawdbot_otel.simulation import EmbeddedRuntime, GatewayClient, run_demo
"""

from __future__ import annotations

from ._client import GatewayClient, GatewayError
from ._cron import DEFAULT_CRON_JOBS, CronJob
from ._demo import PROVOKED_FAILURES, SCENARIOS, DemoStats, run_demo
from ._runtime import EmbeddedRuntime, Peer
from ._workspace import MAX_RECORD_BYTES, SIMULATION_MARKER, ForeignWorkspaceError, Workspace, read_json, write_json

__all__ = [
    "DEFAULT_CRON_JOBS",
    "MAX_RECORD_BYTES",
    "PROVOKED_FAILURES",
    "SCENARIOS",
    "SIMULATION_MARKER",
    "CronJob",
    "DemoStats",
    "EmbeddedRuntime",
    "ForeignWorkspaceError",
    "GatewayClient",
    "GatewayError",
    "Peer",
    "Workspace",
    "read_json",
    "run_demo",
    "write_json",
]

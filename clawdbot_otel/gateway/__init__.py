"""The gateway collection point: a WebSocket gateway on the OpenClaw protocol (a simulated agent runtime,
or a transparent proxy in front of a real gateway) and the frame observer that turns its frames into
the design's request, session, model-call and tool-call spans and gateway/session metrics.

    clawdbot-otel gateway                                   # embedded runtime on ws://127.0.0.1:18789
    clawdbot-otel gateway --upstream ws://127.0.0.1:18790   # proxy in front of a real OpenClaw gateway
    clawdbot-otel demo --duration 60                        # realistic load through it

    from clawdbot_otel.gateway import FrameObserver         # feed frames from anywhere else
"""

from __future__ import annotations

from ._cli import register
from ._client import GatewayClient, GatewayError
from ._demo import DemoStats, run_demo
from ._embedded import CronJob, EmbeddedRuntime
from ._frames import (
    EventFrame,
    Frame,
    FrameError,
    RequestFrame,
    ResponseFrame,
    error_response,
    frame_from_dict,
    parse_frame,
)
from ._observer import FrameObserver
from ._server import GatewayServer, inject_traceparent, start_collectors
from ._workspace import ForeignWorkspaceError, Workspace

__all__ = [
    "CronJob",
    "DemoStats",
    "EmbeddedRuntime",
    "EventFrame",
    "ForeignWorkspaceError",
    "Frame",
    "FrameError",
    "FrameObserver",
    "GatewayClient",
    "GatewayError",
    "GatewayServer",
    "RequestFrame",
    "ResponseFrame",
    "Workspace",
    "error_response",
    "frame_from_dict",
    "inject_traceparent",
    "parse_frame",
    "register",
    "run_demo",
    "start_collectors",
]

"""The gateway collection point: a WebSocket gateway on the OpenClaw protocol (in front of the simulated
runtime of `clawdbot_otel.simulation`, or a transparent proxy in front of a real gateway) and the frame
observer that turns its frames into the design's request, session, model-call and tool-call spans and
gateway/session metrics.

    clawdbot-otel gateway                                   # embedded runtime on ws://127.0.0.1:18789
    clawdbot-otel gateway --upstream ws://127.0.0.1:18790   # proxy in front of a real OpenClaw gateway
    clawdbot-otel demo --duration 60                        # realistic load through it

    from clawdbot_otel.gateway import FrameObserver         # feed frames from anywhere else
"""

from __future__ import annotations

from ._cli import register
from ._companions import start_collectors
from ._monitor import UpstreamMonitor
from ._observer import FrameObserver
from ._relay import inject_traceparent
from ._server import GatewayServer

__all__ = [
    "FrameObserver",
    "GatewayServer",
    "UpstreamMonitor",
    "inject_traceparent",
    "register",
    "start_collectors",
]

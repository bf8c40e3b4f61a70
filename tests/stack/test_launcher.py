"""The launcher's contract: health per server, a clear error for a taken port, nothing started then."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clawdbot_otel.logfiles import log_store_classes
from clawdbot_otel.stack import Ports, StackError, status, up

from .conftest import RunningStack

pytestmark = pytest.mark.stack


def test_status_reports_every_server_healthy(stack: RunningStack) -> None:
    servers = status(stack.info.stack_dir)
    log_store = {"victorialogs", *(c.name for c in log_store_classes())}
    assert {s.name for s in servers} == {"otel-collector", "jaeger", "prometheus", "prometheus-longterm", "alertmanager",
                                          *log_store}
    assert all(s.running and s.healthy for s in servers), servers


def test_taken_port_is_named_with_the_way_to_move_it(stack: RunningStack, tmp_path: Path) -> None:
    ports = Ports().shifted(stack.ports.otlp_grpc - Ports().otlp_grpc + 200)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.prometheus))
        blocker.listen()
        with pytest.raises(StackError) as err:
            up(root=tmp_path / "stack", ports=ports, binaries=stack.binaries, progress=lambda _l: None)
    message = str(err.value)
    assert f"port {ports.prometheus} (prometheus" in message
    assert "--port-offset" in message
    assert "CLAWDBOT_OTEL_PORT_PROMETHEUS" in message
    assert not (tmp_path / "stack" / "state.json").exists()
    assert status(tmp_path / "stack") == []

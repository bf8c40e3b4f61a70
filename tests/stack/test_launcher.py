"""The launcher's contract: health per server, a clear error for a taken port, nothing started then."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
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


def _stack_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", "stack", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_one_server_stops_and_starts_again_with_its_ports_and_data(stack: RunningStack) -> None:
    where = ["--stack-dir", str(stack.info.stack_dir)]
    before = {s["name"]: s for s in json.loads(_stack_cli("status", "--json", *where).stdout)["servers"]}
    info = before["victorialogs-info"]
    assert info["healthy"] and info["data_dir"].endswith("data/victorialogs/info")
    assert info["ports"] == {"victorialogs_storage": stack.ports.victorialogs_storage + 1}

    stopped = _stack_cli("stop", "victorialogs-info", *where)
    assert stopped.returncode == 0, stopped.stderr
    assert "stack stop: victorialogs-info stopped" in stopped.stderr
    during = _stack_cli("status", "--json", *where)
    assert during.returncode == 1  # not all healthy
    servers = {s["name"]: s for s in json.loads(during.stdout)["servers"]}
    assert (servers["victorialogs-info"]["running"], servers["victorialogs-info"]["pid"]) == (False, None)
    assert all(s["healthy"] for name, s in servers.items() if name != "victorialogs-info")

    started = _stack_cli("start", "victorialogs-info", *where)
    assert started.returncode == 0, started.stderr
    after = {s["name"]: s for s in json.loads(_stack_cli("status", "--json", *where).stdout)["servers"]}
    assert after["victorialogs-info"]["healthy"]
    assert after["victorialogs-info"]["pid"] != info["pid"]
    assert (after["victorialogs-info"]["ports"], after["victorialogs-info"]["data_dir"]) == (info["ports"],
                                                                                           info["data_dir"])
    again = _stack_cli("start", "victorialogs-info", *where)
    assert again.returncode == 1
    assert "victorialogs-info is already running" in again.stderr
    unknown = _stack_cli("stop", "nope", *where)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("clawdbot-otel stack stop: error: no server 'nope' in the stack; its servers are: ")

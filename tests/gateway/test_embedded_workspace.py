"""The simulated runtime's workspace: it never touches a folder it did not create, and odd files never stall it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest

from clawdbot_otel.gateway import GatewayServer
from clawdbot_otel.simulation import (
    MAX_RECORD_BYTES,
    SIMULATION_MARKER,
    EmbeddedRuntime,
    ForeignWorkspaceError,
    GatewayClient,
    Workspace,
    read_json,
)
from clawdbot_otel.testing import capture_telemetry

pytestmark = pytest.mark.timeout(30)


def _runtime(root: Path) -> EmbeddedRuntime:
    return EmbeddedRuntime(Workspace(root), lambda event, payload: None, cron_jobs=(), time_scale=0.01)


def test_simulation_default_is_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    expected = tmp_path / "home" / ".local" / "state" / "clawdbot-otel" / "simulated-workspace"
    assert Workspace.simulation_default().root == expected
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Workspace.simulation_default().root == tmp_path / "state" / "clawdbot-otel" / "simulated-workspace"
    assert Workspace.default().root == tmp_path / "home" / "clawd"  # the real one: for read-only watchers


def test_a_real_workspace_is_refused_and_left_alone(tmp_path: Path) -> None:
    real = Workspace(tmp_path / "clawd")
    real.create()
    request = real.spawn_requests / "r1.json"
    request.write_bytes(orjson.dumps({"requestId": "r1"}))
    message = real.inboxes / "builder" / "m1.json"
    message.parent.mkdir()
    message.write_bytes(b"{}")
    before = sorted(p.relative_to(real.root) for p in real.root.rglob("*"))
    with pytest.raises(ForeignWorkspaceError, match="--workspace") as info:
        _runtime(real.root)
    assert str(real.root) in str(info.value) and SIMULATION_MARKER in str(info.value)
    assert sorted(p.relative_to(real.root) for p in real.root.rglob("*")) == before  # nothing written, nothing moved


@pytest.mark.parametrize("existing", [False, True], ids=["new", "empty"])
def test_a_new_or_empty_folder_is_claimed_and_reclaimed(tmp_path: Path, existing: bool) -> None:
    root = tmp_path / "sim"
    if existing:
        root.mkdir()
    runtime = _runtime(root)
    assert (root / SIMULATION_MARKER).is_file()
    (runtime.workspace.spawn_requests / "left-over.json").write_bytes(b"{}")
    assert _runtime(root).workspace == runtime.workspace  # a restart: its own files, its own marker


def test_an_unusable_folder_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ForeignWorkspaceError, match="--workspace"):
        _runtime(tmp_path / "file" / "sim")


def test_proxy_mode_keeps_the_real_workspace_as_its_read_only_default(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with capture_telemetry() as cap:
        server = GatewayServer(cap.telemetry, port=0, upstream="ws://127.0.0.1:9", collectors=False)
    assert server.workspace == Workspace.default()
    assert not (tmp_path / "clawd").exists()


def test_embedded_mode_defaults_to_the_simulation_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with capture_telemetry() as cap:
        server = GatewayServer(cap.telemetry, port=0, collectors=False)
    assert server.workspace == Workspace.simulation_default()
    assert not (tmp_path / "home" / "clawd").exists()


def test_read_json_reads_regular_files_only(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_bytes(b'{"a": 1}')
    big = tmp_path / "big.json"
    big.write_bytes(b" " * MAX_RECORD_BYTES + b"{}")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff{")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # no writer: a blocking open would never return
    assert read_json(good) == {"a": 1}
    assert read_json(good, max_bytes=8) == {"a": 1}
    assert read_json(good, max_bytes=7) is None
    for path in (big, garbage, fifo, tmp_path, tmp_path / "missing.json"):
        assert read_json(path) is None, path


def test_housekeeping_passes_skip_fifos(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path / "sim")
    ws = runtime.workspace
    (ws.inboxes / "builder").mkdir()
    fifos = [ws.spawn_requests / "x.json", ws.inboxes / "builder" / "x.json", ws.heartbeats / "x.json"]
    for fifo in fifos:
        os.mkfifo(fifo)
    old = time.time() - 60
    os.utime(ws.heartbeats / "x.json", (old, old))
    folders = runtime.folders
    assert folders.unanswered_requests() == []
    folders.archive_read_messages(time.time() + 10)
    assert (ws.inboxes / "builder" / "x.json").exists()  # not archived: not a message
    assert folders.expire_files(time.time()) == {ws.heartbeats / "x.json"}  # not a running task's heartbeat


async def test_a_fifo_in_the_spawn_queue_does_not_stop_the_runtime(tmp_path: Path) -> None:
    with capture_telemetry() as cap:
        server = GatewayServer(cap.telemetry, port=0, workspace=tmp_path / "clawd", time_scale=0.01, cron_jobs=(),
                               seed=1, collectors=False, tick_interval_s=0.2)
        os.mkfifo(server.workspace.spawn_requests / "x.json")
        async with server, GatewayClient(server.url) as client:
            for _ in range(5):  # several passes of the spawn-queue loop (every 10 ms at this time scale)
                health = await asyncio.wait_for(client.call("health"), 5)
                assert health["ok"] is True
                await asyncio.sleep(0.05)
            final = await asyncio.wait_for(client.agent("spawn a helper"), 10)  # the queue still works
        assert server.observer_errors == []
    assert final["status"] == "ok"
    tools = [s for s in cap.spans_by_category("tool_call") if s.attributes["gen_ai.tool.name"] == "sessions_spawn"]
    assert tools and all(s.status.is_ok for s in tools)

"""`clawdbot-otel gateway --upstream` says whether it reads the upstream's OpenClaw state, and why not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _gateway_lines(tmp_path: Path, *args: str, openclaw_state_dir: Path | None = None) -> list[str]:
    """Start the gateway as a user does, read what it printed once it listens, stop it with SIGINT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_", "OPENCLAW_"))}
    env.update({"CLAWDBOT_OTEL_OUTPUT_DIR": str(tmp_path / "out"), "XDG_STATE_HOME": str(tmp_path / "xdg"),
                "HOME": str(tmp_path / "home")})
    if openclaw_state_dir is not None:
        env["OPENCLAW_STATE_DIR"] = str(openclaw_state_dir)
    out = tmp_path / "stdout.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "clawdbot_otel.cli", "gateway", "--port", "0", "--workspace",
                                 str(tmp_path / "clawd"), *args], env=env, stdout=sink, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while b"OpenClaw state" not in out.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the gateway did not say anything about OpenClaw state:\n{out.read_text()}")
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return [line for line in out.read_text().splitlines() if "OpenClaw state" in line]


def test_a_remote_upstream_is_not_read(tmp_path: Path) -> None:
    assert _gateway_lines(tmp_path, "--upstream", "ws://192.0.2.7:18789") == [
        "clawdbot-otel gateway: upstream 192.0.2.7 is not on this machine, so its OpenClaw state is not read: "
        "automations are seen only while a client is connected (pass --openclaw-state DIR if its state is here)"]


def test_a_local_upstream_without_state_says_where_it_looked(tmp_path: Path) -> None:
    folder = tmp_path / "openclaw-state"
    assert _gateway_lines(tmp_path, "--upstream", "ws://127.0.0.1:9", openclaw_state_dir=folder) == [
        f"clawdbot-otel gateway: no OpenClaw state in {folder}; automations are seen only while a client is "
        "connected (pass --openclaw-state DIR)"]

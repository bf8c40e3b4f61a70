"""`clawdbot-otel top` in a real terminal (a pty): keys switch among the design's six summary views, q quits.
No Prometheus is needed: a view that cannot be asked still shows its name (and DOWN)."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys
import time

from clawdbot_otel.presentation._top_views import VIEWS, next_view


def test_keys_select_views_in_the_designs_order() -> None:
    assert [next_view("overview", key) for key, _name, _uid in VIEWS] == [name for _k, name, _u in VIEWS]
    assert next_view("alerts", "\t") == "overview"  # Tab goes round
    assert next_view("tasks", "n") == "sessions"
    assert next_view("queues", "x") == "queues"  # a key that means nothing changes nothing
    assert next_view("queues", "q") is None


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_live_screen_switches_views_on_keys_and_quits_on_q() -> None:
    dead = f"http://127.0.0.1:{_dead_port()}"
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "clawdbot_otel.cli", "top", "--interval", "30",
                             "--prometheus", dead, "--alertmanager", dead],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"})
    os.close(slave)
    seen = b""

    def wait_for(text: bytes, timeout_s: float = 20.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout_s
        while text not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert text in seen, f"{text!r} not on the screen; last output: {seen[-2000:]!r}"

    try:
        wait_for(b"(1-6 or Tab: view, q: quit)")
        for key, name, _uid in VIEWS[1:]:
            os.write(master, key.encode())
            wait_for(f"CLAWDBOT TELEMETRY / {name.upper()}".encode())
        os.write(master, b"q")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)

"""The design's business hours, asked of the real Alertmanager rather than re-implemented here.

Alertmanager decides whether a time interval is active from *its own* clock, read in the interval's
`location`. To ask it about any instant of the week without waiting for it, each probe gives the
intervals a time zone of its own whose offset makes "now" read as the instant probed (a TZif file in a
private ZONEINFO folder, which Go's time package reads before the system's). Nothing else in the routing
changes: the routes, their matchers and `continue`, and the intervals' weekdays and times are
deploy/alertmanager/alertmanager.yml's; the receivers become webhooks to this test (the fire-drill copy).

At each probe a WARNING alert is sent to the running Alertmanager and the receiver it is delivered to is
compared with the design's "Alert Routing" table: #aibot-chat on weekdays 09:00-18:00, the batch
(warning-digest) otherwise, never both.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawdbot_otel.presentation import drill_alertmanager_yaml

from .alertmanager import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
MONDAY = datetime(2026, 3, 2)  # a Monday; probes are wall-clock times in the intervals' own zone
# The edges of the design's weekday 09:00-18:00 and of the week, and one instant inside each stretch.
PROBES = [MONDAY + timedelta(days=day, hours=h, minutes=m) for day, h, m in (
    (0, 0, 0), (0, 8, 59), (0, 9, 0), (0, 12, 0), (0, 17, 59), (0, 18, 0), (2, 3, 0), (2, 13, 30),
    (4, 8, 59), (4, 9, 0), (4, 17, 59), (4, 18, 0), (4, 23, 59), (5, 0, 0), (5, 10, 0), (6, 23, 59),
)]
SETTLE_S = 1.0  # after the first delivery: time for a second (wrong) route to deliver too


def _design_receiver(at: datetime) -> str:
    return "slack-aibot-chat" if at.weekday() < 5 and 9 <= at.hour < 18 else "warning-digest"


def _tzif(offset_s: int) -> bytes:
    """A version-1 TZif file: one fixed offset, no transitions."""
    header = b"TZif" + b"\0" * 16 + struct.pack(">6l", 0, 0, 0, 0, 1, 4)
    return header + struct.pack(">lBB", offset_s, 0, 0) + b"DRL\0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: Any) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


class Alertmanager:
    def __init__(self, binary: str, tmp: Path, receiver: WebhookReceiver) -> None:
        self.tmp = tmp
        self.zones = tmp / "zoneinfo"
        self.zones.mkdir()
        self.config = tmp / "alertmanager.yml"
        self.drill: dict[str, Any] = yaml.safe_load(
            drill_alertmanager_yaml(ALERTMANAGER.read_text(), webhook_url=receiver.url))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.argv = [binary, f"--config.file={self.config}", f"--storage.path={tmp / 'data'}",
                     f"--web.listen-address={self.url.removeprefix('http://')}", "--cluster.listen-address="]

    def at(self, probe: datetime, name: str) -> None:
        """Point every time interval at a zone in which it is now `probe` (+30 s: mid-minute)."""
        wall = (probe + timedelta(seconds=30)).replace(tzinfo=UTC).timestamp()  # the wall clock, read as UTC
        offset_s = round(wall - time.time())
        (self.zones / name).parent.mkdir(parents=True, exist_ok=True)
        (self.zones / name).write_bytes(_tzif(offset_s))
        for interval in self.drill["time_intervals"]:
            for spec in interval["time_intervals"]:
                spec["location"] = name
        self.config.write_text(yaml.safe_dump(self.drill, sort_keys=False))

    @contextlib.contextmanager
    def running(self) -> Iterator[subprocess.Popen[bytes]]:
        env = {"PATH": "/usr/bin:/bin", "ZONEINFO": str(self.zones)}
        log = (self.tmp / "alertmanager.log").open("wb")
        proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()

    def reload(self) -> None:
        _post(f"{self.url}/-/reload", {})


def _ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"Alertmanager not ready:\n{log.read_text()[-2000:]}")


@pytest.mark.tools
def test_alertmanager_routes_warnings_by_the_designs_business_hours(tmp_path: Path) -> None:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager not found: install Debian's prometheus-alertmanager "
                    "(clawdbot-otel stack build)")
    wrong = []
    with WebhookReceiver() as receiver:
        am = Alertmanager(binary, tmp_path, receiver)
        am.at(PROBES[0], "Drill/P0")
        with am.running() as proc:
            _ready(am.url, proc, tmp_path / "alertmanager.log")
            for i, probe in enumerate(PROBES):
                if i:
                    am.at(probe, f"Drill/P{i}")
                    am.reload()
                sent = time.monotonic()
                alertname = f"BusinessHoursProbe{i}"
                _post(f"{am.url}/api/v2/alerts", [{"labels": {"alertname": alertname, "severity": "warning"}}])
                deadline = sent + 15
                while not receiver.seen(alertname, "firing", {}, sent) and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(SETTLE_S)
                got = sorted({n.receiver for n in receiver.seen(alertname, "firing", {}, sent)})
                if got != [_design_receiver(probe)]:
                    wrong.append(f"{probe:%a %H:%M}: {got or 'nothing'}, design: {_design_receiver(probe)}")
    assert not wrong, "\n".join(wrong)

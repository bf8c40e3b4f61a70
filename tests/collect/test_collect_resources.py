"""Resource gauges read through psutil at export time; a vanished process is counted, never raised."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil

from clawdbot_otel.collect import ResourceSampler
from clawdbot_otel.testing import Capture

from .helpers import T0, FakeClock, source_errors, value, values


def test_process_host_and_disk_gauges(cap: Capture, tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    ResourceSampler(cap.telemetry, paths=[tmp_path, missing], process_name="gateway")
    assert value(cap, "resource.memory.used", process="gateway") > 0
    assert value(cap, "resource.cpu", process="gateway") >= 0
    assert value(cap, "resource.memory.total") == psutil.virtual_memory().total
    usage = psutil.disk_usage(str(tmp_path))
    assert value(cap, "resource.disk.used", path=str(tmp_path)) > 0
    assert value(cap, "resource.disk.free", path=str(tmp_path)) > 0
    assert abs(value(cap, "resource.disk.free", path=str(tmp_path)) - usage.free) < 1 << 30
    assert value(cap, "resource.disk.used", path=str(missing)) is None
    assert value(cap, "gateway.uptime") is None  # gateway gauges only on request
    missing.mkdir()
    assert value(cap, "resource.disk.used", path=str(missing)) > 0
    assert source_errors(cap, "resources") == {}


def test_gateway_gauges(cap: Capture, clock: FakeClock) -> None:
    ResourceSampler(cap.telemetry, paths=[], gateway=True, started_at=T0 - 3600, now=clock)
    assert value(cap, "gateway.uptime") == 3600
    memory = values(cap, "gateway.memory")
    assert set(memory) == {(("type", "rss"),), (("type", "vms"),)}
    assert memory[(("type", "vms"),)] >= memory[(("type", "rss"),)] > 0
    assert value(cap, "gateway.cpu") >= 0
    assert value(cap, "resource.memory.used", process=psutil.Process(os.getpid()).name()) > 0


def test_process_that_exits_is_counted_once_not_raised(cap: Capture) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        ResourceSampler(cap.telemetry, paths=[], pid=child.pid, process_name="worker", gateway=True)
        assert value(cap, "resource.memory.used", process="worker") > 0
    finally:
        child.kill()
        child.wait()
    for _ in range(2):
        assert value(cap, "resource.memory.used", process="worker") is None
    assert value(cap, "resource.memory.total") > 0  # the host gauges go on
    assert source_errors(cap, "resources") == {"unreadable": 1}


def test_close_stops_reporting(cap: Capture, tmp_path: Path) -> None:
    sampler = ResourceSampler(cap.telemetry, paths=[tmp_path])
    sampler.close()
    assert values(cap, "resource.memory.total") == {}
    assert values(cap, "resource.disk.used") == {}

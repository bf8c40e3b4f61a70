"""The proxy's liveness probe of its upstream: uptime while it answers, nothing (and one error) once it is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clawdbot_otel.gateway import GatewayServer, UpstreamMonitor
from clawdbot_otel.testing import capture_telemetry

pytestmark = pytest.mark.timeout(60)


async def _wait(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("token", ["T", None])
async def test_uptime_while_the_upstream_answers_none_after_it_stops(tmp_path: Path, token: str | None) -> None:
    with capture_telemetry(strict=False) as cap_up, capture_telemetry() as cap:
        upstream = GatewayServer(cap_up.telemetry, port=0, workspace=tmp_path / "up", token="T", time_scale=0.01,
                                 tick_interval_s=0.2, cron_jobs=(), collectors=False)
        await upstream.start()
        monitor = UpstreamMonitor(cap.telemetry, upstream.url, token, retry_s=0.1, probe_interval_s=0.1,
                                  stale_after_s=2.0)
        task = asyncio.create_task(monitor.run())
        try:
            await _wait(lambda: monitor.alive)
            first = monitor.uptime_s()
            assert first is not None
            await asyncio.sleep(0.3)
            later = monitor.uptime_s()
            assert later is not None and later > first  # it counts on between probes
            if token is not None:
                assert monitor.boot_id is not None  # learnt from hello-ok
            await upstream.stop()
            await _wait(lambda: not monitor.alive)
            assert monitor.uptime_s() is None
            await asyncio.sleep(0.5)  # several failed retries: still one error, one log line
            errors = {p.attributes["error_type"]: p.value for p in cap.metric_points("gateway.errors")}
            assert errors == {"runtime": 1}
            assert [r["message"] for r in cap.log_lines()].count("Upstream gateway unreachable") == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_token_is_not_sent_again(tmp_path: Path) -> None:
    with capture_telemetry(strict=False) as cap_up, capture_telemetry() as cap:
        upstream = GatewayServer(cap_up.telemetry, port=0, workspace=tmp_path / "up", token="T", time_scale=0.01,
                                 tick_interval_s=0.2, cron_jobs=(), collectors=False)
        async with upstream:
            monitor = UpstreamMonitor(cap.telemetry, upstream.url, "wrong", retry_s=0.1, probe_interval_s=0.1)
            task = asyncio.create_task(monitor.run())
            try:
                await _wait(lambda: monitor.alive and monitor.token is None)
                await asyncio.sleep(0.5)
                assert monitor.alive  # the challenge alone says it is there
                refused = [r for r in cap.log_lines() if "refused the monitor's token" in r["message"]]
                assert len(refused) == 1
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        failures = [r for r in cap_up.log_lines() if r["component"] == "audit" and r["message"] != "auth.success"]
        assert len(failures) == 1  # the upstream saw one bad attempt, not one per probe


async def test_the_proxy_reports_the_upstreams_uptime_as_gateway_uptime(tmp_path: Path) -> None:
    with capture_telemetry(strict=False) as cap_up, capture_telemetry() as cap:
        upstream = GatewayServer(cap_up.telemetry, port=0, workspace=tmp_path / "up", token="T", time_scale=0.01,
                                 tick_interval_s=0.2, cron_jobs=(), collectors=False)
        async with upstream:
            await asyncio.sleep(1.0)  # the upstream has been up a while before the proxy starts
            proxy = GatewayServer(cap.telemetry, port=0, upstream=upstream.url, upstream_token="T",
                                  workspace=tmp_path / "clawd")
            async with proxy:
                assert proxy.monitor is not None
                await _wait(lambda: proxy.monitor is not None and proxy.monitor.alive)
                (uptime,) = cap.metric_points("gateway.uptime")
                assert uptime.value >= 1.0  # the upstream's uptime, not the proxy's (a few ms)

"""Fixtures that run the REAL OpenClaw gateway (npm openclaw@2026.9.6 on Node 26) against a fake model.

- ``openclaw_install`` (session): installs into ``${CLAWDBOT_OTEL_CACHE:-~/.cache/clawdbot-otel}`` once.
- ``fake_model_server`` (session): the one fake OpenAI-compatible server the session gateway points at.
- ``fake_model`` (function): the same server, with its script/recordings reset and the default reply restored.
- ``openclaw_gateway`` (session): a running gateway (scratch HOME under pytest's tmp dir) wired to the fake model.

Install/start failures FAIL the tests (never skip). Mark tests with ``@pytest.mark.openclaw``. The repository's
conftest.py registers this module as a plugin, so every test folder shares the one session gateway.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.openclaw.fake_model import FakeModelServer, TextReply
from tests.openclaw.harness import OpenClawGateway, start_gateway
from tests.openclaw.install import OpenClawInstall, OpenClawInstallError, ensure_openclaw


@pytest.fixture(scope="session")
def openclaw_install() -> OpenClawInstall:
    try:
        return ensure_openclaw()
    except OpenClawInstallError as exc:
        pytest.fail(f"installing OpenClaw failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def fake_model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def fake_model(fake_model_server: FakeModelServer) -> FakeModelServer:
    fake_model_server.reset()
    fake_model_server.set_default(TextReply())
    return fake_model_server


@pytest.fixture(scope="session")
def openclaw_gateway(
    openclaw_install: OpenClawInstall,
    fake_model_server: FakeModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenClawGateway]:
    home = tmp_path_factory.mktemp("openclaw-home")
    cm = start_gateway(openclaw_install, home, fake_model_server)
    try:
        gateway = cm.__enter__()
    except Exception as exc:  # any start-up failure FAILS the tests with the reason (never skip)
        pytest.fail(f"starting the OpenClaw gateway failed: {type(exc).__name__}: {exc}", pytrace=False)
    print(
        f"\n[openclaw] gateway {gateway.url} ready in {gateway.startup_seconds:.1f}s, "
        f"warm-up turn {gateway.warm_up_seconds or 0:.1f}s (home {home})",
        file=sys.stderr,
    )
    try:
        yield gateway
    finally:
        cm.__exit__(None, None, None)

"""Automations on a REAL OpenClaw gateway with its scheduler on, made and run with the real CLI: shared by the
state collection point's tests (tests/collect) and its end-to-end test through the stack (tests/stack).

The repository's conftest.py registers this module as a plugin; the fixtures are module-scoped, so each test
module that uses them gets its own gateway.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.openclaw.fake_model import ErrorReply, FakeModelServer, TextReply
from tests.openclaw.harness import OpenClawGateway, start_gateway
from tests.openclaw.install import OpenClawInstall

__all__ = ["Automation", "automations", "cron_gateway", "cron_model", "describe", "history", "run_automation"]


@dataclass
class Automation:
    name: str
    job_id: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    """OpenClaw's own run history of the job (`automations runs <id> --json` entries)."""


def describe(proc: Any) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def cron_model() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def cron_gateway(openclaw_install: OpenClawInstall, cron_model: FakeModelServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenClawGateway]:
    """A real gateway with its scheduler on (the shared session gateway runs with `cron.enabled: false`)."""
    home = tmp_path_factory.mktemp("openclaw-cron-home")
    cm = start_gateway(openclaw_install, home, cron_model, config_extra={"cron": {"enabled": True}}, warm_up=False)
    try:
        gateway = cm.__enter__()
    except Exception as exc:  # a start-up failure FAILS the tests with the reason (never skip)
        pytest.fail(f"starting the OpenClaw gateway failed: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        yield gateway
    finally:
        cm.__exit__(None, None, None)


def _add(gw: OpenClawGateway, name: str, *payload: str) -> Automation:
    proc = gw.run_cli("automations", "add", "--name", name, "--every", "1h", "--no-deliver", *payload)
    assert proc.returncode == 0, describe(proc)
    return Automation(name, json.loads(proc.stdout)["id"])


def run_automation(gw: OpenClawGateway, job: Automation, *, succeeds: bool) -> None:
    proc = gw.run_cli("automations", "run", job.job_id, "--wait", "--poll-interval", "500ms", timeout=600)
    assert (proc.returncode == 0) is succeeds, describe(proc)


def history(gw: OpenClawGateway, job: Automation) -> list[dict[str, Any]]:
    proc = gw.run_cli("automations", "runs", job.job_id, "--json")
    assert proc.returncode == 0, describe(proc)
    return [e for e in json.loads(proc.stdout)["entries"] if e.get("action") == "finished"]


@pytest.fixture(scope="module")
def automations(cron_gateway: OpenClawGateway, cron_model: FakeModelServer) -> dict[str, Automation]:
    """A succeeding command, a failing command, an agent turn whose model call fails, a disabled job: each
    (but the disabled one) run once with the real CLI, no client connected to any proxy of ours."""
    gw = cron_gateway
    jobs = {
        "ok": _add(gw, "nightly-ok", "--command", "sleep 0.3; echo done"),
        "fail": _add(gw, "nightly-exit3", "--command", "sleep 0.2; exit 3"),
        "model": _add(gw, "nightly-model-down", "--message", "summarise the day", "--session", "isolated"),
        "disabled": _add(gw, "nightly-disabled", "--command", "true", "--disabled"),
    }
    run_automation(gw, jobs["ok"], succeeds=True)
    run_automation(gw, jobs["fail"], succeeds=False)
    cron_model.set_default(ErrorReply(500, "fake upstream failure"))
    try:
        run_automation(gw, jobs["model"], succeeds=False)
    finally:
        cron_model.set_default(TextReply())
    for job in jobs.values():
        job.runs = history(gw, job)
    return jobs

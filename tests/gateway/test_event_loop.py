"""`clawdbot-otel gateway` runs on uvloop (a dependency where it builds) unless told otherwise."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from clawdbot_otel.gateway._cli import EVENT_LOOP_ENV, run_event_loop


async def _loop_is_uvloop() -> int:
    return int(isinstance(asyncio.get_running_loop(), uvloop.Loop))


@pytest.mark.parametrize(("setting", "on_uvloop"), [(None, 1), ("uvloop", 1), ("asyncio", 0), (" AsyncIO ", 0)])
def test_the_gateway_loop_follows_the_setting(monkeypatch: pytest.MonkeyPatch, setting: str | None,
                                              on_uvloop: int) -> None:
    if setting is None:
        monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(EVENT_LOOP_ENV, setting)
    assert run_event_loop(_loop_is_uvloop()) == on_uvloop

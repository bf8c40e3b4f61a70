"""Every public module's `__all__` is exactly its public names (as httpx's tests/test_exported_members.py
checks): a name added without exporting it, or exported without existing, fails here."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import clawdbot_otel

# Every module whose dotted name has no private part: the package's public surface.
PUBLIC_MODULES = ["clawdbot_otel", *sorted(
    info.name for info in pkgutil.walk_packages(clawdbot_otel.__path__, "clawdbot_otel.")
    if not any(part.startswith("_") for part in info.name.split("."))
)]
# Module attributes that are not API: the `from __future__` feature and the package's version string.
NOT_MEMBERS = {"annotations", "__version__"}


def _public_names(module: types.ModuleType) -> set[str]:
    """A package re-exports from private modules, so each public name it holds is a member (httpx's rule).
    A plain module also holds what it imported: its members are the classes and functions it defines."""
    names = set()
    for member, value in vars(module).items():
        if member.startswith("_") or member in NOT_MEMBERS or isinstance(value, types.ModuleType):
            continue
        if hasattr(module, "__path__") or getattr(value, "__module__", None) == module.__name__:
            names.add(member)
    return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported), "a name listed twice"
    assert [n for n in exported if not hasattr(module, n)] == [], "exported but missing"
    if hasattr(module, "__path__"):
        assert sorted(exported) == sorted(_public_names(module))
    else:  # constants carry no __module__: they may be exported or not
        assert sorted(_public_names(module) - set(exported)) == []


def test_the_public_modules_are_the_layers() -> None:
    assert {"clawdbot_otel.conventions", "clawdbot_otel.collect", "clawdbot_otel.gateway", "clawdbot_otel.presentation",
            "clawdbot_otel.simulation", "clawdbot_otel.stack", "clawdbot_otel.cli"} <= set(PUBLIC_MODULES)


def test_the_top_level_api_is_the_designs() -> None:
    """What `import clawdbot_otel as telemetry` offers: setup, the metric calls, one helper per span
    category, logging and audit, correlation."""
    assert set(clawdbot_otel.__all__) >= {
        "setup", "shutdown", "get_telemetry", "increment", "gauge", "histogram", "observe", "log", "audit",
        "start_span", "request_span", "session_span", "model_call_span", "tool_call_span", "spawn_span",
        "message_span", "validation_span", "job_span", "correlation", "current_correlation_id", "Telemetry",
    }
    assert clawdbot_otel.increment.__self__ is clawdbot_otel.get_telemetry()  # bound to the default instance

"""Fixtures shared across test folders: the real OpenClaw gateway is started once per session for all of them."""

pytest_plugins = ["tests.openclaw.fixtures", "tests.collect.openclaw_automations"]

"""`clawdbot-otel demo`: realistic, bounded load through a gateway so that every collection point emits.

Workers drive the protocol like the openclaw CLI does (connect, agent turns, agent.wait, sessions.*,
cron.*, health) with a fixed mix: plain turns, tool calls, a share of failing and slow tools, model
errors and retries, sub-agent spawns (spawn queue), inbox messages, stale heartbeats, failed
validations, invalid frames and a bad token now and then. The embedded gateway turns the message
words into those behaviours (see `_runtime`); a real gateway just answers them as turns.

A failure of a scenario that provokes one on purpose (`PROVOKED_FAILURES`) is expected; any other
failure is unexpected, listed in the summary, and makes `DemoStats.exit_status` non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._client import GatewayClient, GatewayError

__all__ = ["PROVOKED_FAILURES", "SCENARIOS", "DemoStats", "run_demo"]

#: (name, weight, what it does). Agent turns carry the words the embedded runtime reacts to.
SCENARIOS: tuple[tuple[str, int, str], ...] = (
    ("plain", 26, "summarize the status board"),
    ("tool", 14, "please use a tool now"),
    ("failing_tool", 5, "please use a failing tool"),
    ("slow_tool", 4, "slow search: use a tool"),
    ("model_error", 2, "please fail the model"),
    ("flaky", 4, "flaky provider, answer anyway"),
    ("spawn", 7, "spawn a researcher for the report"),
    ("inbox", 7, "message builder about the release"),
    ("inbox_dead_letter", 1, "message ghost about nothing"),
    ("opus", 4, "think hard with opus: use a tool"),
    ("haiku", 3, "quick haiku answer"),
    ("stale", 1, "stale task: use a tool"),
    ("invalid", 2, "invalid result: use a tool"),
    ("wait", 2, "long report, then wait for it"),
    ("sessions", 5, "sessions.list / sessions.usage"),
    ("cron", 5, "cron.list / cron.status / cron.runs / cron.run"),
    ("health", 3, "health / status"),
    ("bad_frame", 1, "a frame that is not JSON"),
    ("bad_token", 1, "connect with a wrong token"),
)


#: The scenarios that make the gateway fail on purpose: their failures are expected. (A failing tool
#: fails the tool call, not the turn, on the embedded runtime; a real gateway's model may give up.)
PROVOKED_FAILURES = frozenset({"failing_tool", "model_error", "bad_frame", "bad_token"})
_MAX_ERROR_KINDS = 20  # distinct unexpected errors remembered for the summary


@dataclass
class DemoStats:
    started: float = field(default_factory=time.monotonic)
    ops: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    expected_failures: int = 0
    unexpected_failures: int = 0
    #: "scenario: error" -> count, for the unexpected failures (the first `_MAX_ERROR_KINDS` kinds)
    unexpected: Counter[str] = field(default_factory=Counter)
    connections: int = 0

    @property
    def failed(self) -> int:
        return self.expected_failures + self.unexpected_failures

    @property
    def exit_status(self) -> int:
        """0 when every failure was provoked on purpose, else 1 (the `demo` command's exit status)."""
        return 1 if self.unexpected_failures else 0

    def record_failure(self, scenario: str, exc: BaseException) -> None:
        # Provoked means answered with an error: a timeout or a lost connection is never on purpose.
        if scenario in PROVOKED_FAILURES and isinstance(exc, GatewayError):
            self.expected_failures += 1
            return
        self.unexpected_failures += 1
        kind = f"{scenario}: {type(exc).__name__}: {exc}"[:200]
        if kind in self.unexpected or len(self.unexpected) < _MAX_ERROR_KINDS:
            self.unexpected[kind] += 1

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        total = self.ok + self.failed
        top = ", ".join(f"{k} {v}" for k, v in self.ops.most_common(4))
        return (f"demo {elapsed:5.0f}s  ops {total} ({total / max(elapsed, 1e-9):.1f}/s)  ok {self.ok}  "
                f"failed {self.failed} (expected {self.expected_failures}, unexpected {self.unexpected_failures})  "
                f"connections {self.connections}  [{top}]")

    def summary(self) -> str:
        """The last line, and what failed unexpectedly (most frequent first)."""
        lines = [self.line()]
        if self.unexpected_failures:
            lines.append(f"unexpected failures ({self.unexpected_failures}):")
            lines += [f"  {count:5d}  {kind}" for kind, count in self.unexpected.most_common(10)]
        return "\n".join(lines)


async def _scenario(name: str, text: str, client: GatewayClient, url: str, *, rng: random.Random) -> None:
    if name == "sessions":
        await client.call("sessions.list", {"limit": 20})
        await client.call("sessions.usage", {})
    elif name == "cron":
        jobs = (await client.call("cron.list", {})).get("jobs") or []
        await client.call("cron.status", {})
        if jobs:
            job = rng.choice(jobs)
            await client.call("cron.runs", {"id": job["id"]})
            if rng.random() < 0.3:
                await client.call("cron.run", {"id": job["id"], "mode": "force"})
    elif name == "health":
        await client.call("health", {})
        await client.call("status", {})
    elif name == "bad_frame":
        await client.send_raw("{this is not json")
        raise GatewayError("INVALID_REQUEST", "sent an invalid frame on purpose")
    elif name == "bad_token":
        bad = GatewayClient(url, token="definitely-wrong-token", client_id="demo-bad-token")
        try:
            await bad.connect()
        finally:
            await bad.close()
    elif name == "wait":
        accepted: dict[str, Any] = {}
        run = asyncio.create_task(client.agent(text))
        await asyncio.sleep(0.05)
        accepted = await run
        await client.call("agent.wait", {"runId": accepted.get("runId"), "timeoutMs": 5000})
    else:
        session_key = None
        if rng.random() < 0.3:
            session_key = f"agent:main:demo-{rng.randint(1, 5)}"
        await client.agent(text, session_key=session_key, timeout_s=120)


async def _worker(url: str, token: str | None, deadline: float, stats: DemoStats, *, rng: random.Random,
                  first: list[str]) -> None:
    names = [s[0] for s in SCENARIOS]
    weights = [s[1] for s in SCENARIOS]
    texts = {s[0]: s[2] for s in SCENARIOS}
    client: GatewayClient | None = None
    ops_on_connection = 0
    try:
        while time.monotonic() < deadline:
            if client is None or ops_on_connection >= rng.randint(3, 15):  # the CLI connects per command
                if client is not None:
                    await client.close()
                client = GatewayClient(url, token=token, client_id="demo")
                await client.connect()
                stats.connections += 1
                ops_on_connection = 0
            name = first.pop(0) if first else rng.choices(names, weights)[0]
            stats.ops[name] += 1
            ops_on_connection += 1
            try:
                await asyncio.wait_for(_scenario(name, texts[name], client, url, rng=rng),
                                       max(deadline - time.monotonic(), 0.1) + 30)
                stats.ok += 1
            except (GatewayError, TimeoutError, ConnectionError) as exc:
                stats.record_failure(name, exc)
                if isinstance(exc, ConnectionError | TimeoutError):
                    with contextlib.suppress(Exception):
                        await client.close()
                    client = None
            await asyncio.sleep(rng.uniform(0.0, 0.2))
    finally:
        if client is not None:
            await client.close()


async def run_demo(url: str, *, token: str | None = None, duration_s: float = 60.0, concurrency: int = 4,
                   seed: int | None = None, out: TextIO | None = sys.stderr) -> DemoStats:
    """Drive load for `duration_s` (then let running turns finish, bounded) and return the counts."""
    probe = GatewayClient(url, token=token, client_id="demo")
    try:
        await probe.connect()
    except OSError as exc:
        raise ConnectionError(f"no gateway at {url} ({exc}); start one with `clawdbot-otel gateway`") from exc
    finally:
        await probe.close()
    stats = DemoStats()
    master = random.Random(seed)
    deadline = time.monotonic() + duration_s
    # Every scenario once first (spread over the workers), then the weighted mix.
    names = [s[0] for s in SCENARIOS]
    workers = [asyncio.create_task(_worker(url, token, deadline, stats, rng=random.Random(master.random()),
                                           first=names[i::concurrency]))
               for i in range(concurrency)]
    tty = bool(out is not None and out.isatty())
    last_print = 0.0
    try:
        while not all(w.done() for w in workers):
            await asyncio.wait(workers, timeout=1.0)
            now = time.monotonic()
            if out is not None and (tty or now - last_print >= 5.0):
                out.write(("\r\x1b[K" if tty else "") + stats.line() + ("" if tty else "\n"))
                out.flush()
                last_print = now
            if now > deadline + 60:  # bounded: a run that never answers does not keep the demo alive
                for w in workers:
                    w.cancel()
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if out is not None:
        out.write(("\r\x1b[K" if tty else "") + stats.summary() + "\n")
        out.flush()
    return stats

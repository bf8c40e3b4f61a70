"""Spawn queue: depth, latency, outcomes, sub-agents and one span per answered request, counted once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.collect import SpawnQueueWatcher
from clawdbot_otel.testing import Capture

from .helpers import T0, FakeClock, histogram, logs, value, values, write_json

REQUESTED_ISO = "2027-01-15T08:00:00Z"  # == T0
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def request(rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "requestId": rid, "requestedBy": "main", "requestedAt": REQUESTED_ISO, "waitForResult": True,
        "spawn": {"label": f"research-{rid}", "model": "anthropic/claude-opus-4-5",
                  "task": "Summarise the logs\nthen report"},
        **extra,
    }


def response(rid: str, status: str | None = "success", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"requestId": rid, "processedAt": int((T0 + 12.5) * 1000),  # epoch ms
                            "sessionKey": f"agent:main:subagent:{rid}", "error": None, **extra}
    if status is not None:
        data["status"] = status
    return data


class Queue:
    def __init__(self, cap: Capture, root: Path, clock: FakeClock, **kwargs: Any) -> None:
        self.root = root
        self.watcher = SpawnQueueWatcher(cap.telemetry, root, now=clock, **kwargs)

    def request(self, rid: str, **extra: Any) -> Path:
        return write_json(self.root / "requests" / f"{rid}.json", request(rid, **extra))

    def respond(self, rid: str, status: str | None = "success", mtime: float = T0 + 13, **extra: Any) -> Path:
        return write_json(self.root / "responses" / f"{rid}.json", response(rid, status, **extra), mtime=mtime)

    def scan(self, times: int = 1) -> None:
        for _ in range(times):
            self.watcher.scan_once()


@pytest.fixture
def queue(cap: Capture, tmp_path: Path, clock: FakeClock) -> Queue:
    return Queue(cap, tmp_path / "spawn-queue", clock)


def test_depth_counts_requests_without_response(cap: Capture, queue: Queue) -> None:
    queue.request("r1")
    queue.request("r2")
    queue.scan()
    assert value(cap, "spawn.queue.depth") == 2
    queue.respond("r1")
    queue.scan()
    assert value(cap, "spawn.queue.depth") == 1
    assert [r["metadata"]["request_id"] for r in logs(cap, "Spawn request created")] == ["r1", "r2"]


def test_successful_spawn_counted_once_with_latency_span_and_subagent(cap: Capture, queue: Queue) -> None:
    queue.request("r1")
    queue.scan()
    queue.respond("r1")
    queue.scan(3)
    assert value(cap, "spawn.requests", status="success") == 1
    assert value(cap, "spawn.subagent", model="opus") == 1
    assert value(cap, "spawn.subagent.active", model="opus") == 1
    assert histogram(cap, "spawn.queue.latency") == (1, 12.5)
    [span] = cap.spans_by_category("spawn")
    assert span.name == "create_agent research-r1"
    assert span.start_time == int(T0 * 1e9)
    assert span.end_time == int((T0 + 12.5) * 1e9)
    assert span.status.status_code is StatusCode.OK
    attrs = dict(span.attributes or {})
    assert attrs["clawdbot.spawn.label"] == "research-r1"
    assert attrs["clawdbot.spawn.model"] == "opus"
    assert attrs["gen_ai.request.model"] == "anthropic/claude-opus-4-5"
    assert attrs["clawdbot.spawn.task_summary"] == "Summarise the logs"
    assert attrs["clawdbot.spawn.request_id"] == "r1"
    assert attrs["clawdbot.spawn.requested_by"] == "main"
    assert attrs["clawdbot.spawn.session_key"] == "agent:main:subagent:r1"
    assert attrs["clawdbot.spawn.queue_latency_s"] == 12.5


def test_failure_and_timeout_mark_the_span(cap: Capture, queue: Queue) -> None:
    for rid in ("r1", "r2"):
        queue.request(rid)
    queue.respond("r1", "failed", sessionKey=None, error="model overloaded")
    queue.respond("r2", "timeout", sessionKey=None)
    queue.scan(2)
    assert values(cap, "spawn.requests") == {(("status", "failure"),): 1, (("status", "timeout"),): 1}
    assert value(cap, "spawn.subagent", model="opus") is None
    spans = {dict(s.attributes or {})["clawdbot.spawn.request_id"]: s for s in cap.spans_by_category("spawn")}
    assert spans["r1"].status.status_code is StatusCode.ERROR
    assert spans["r1"].status.description == "model overloaded"
    assert dict(spans["r2"].attributes or {})["error.type"] == "timeout"
    assert [r["level"] for r in logs(cap, "Spawn failure")] == ["WARN"]


def test_unknown_status_is_other_and_said_once(cap: Capture, queue: Queue) -> None:
    for rid in ("r1", "r2"):
        queue.request(rid)
        queue.respond(rid, "exploded")
    queue.scan(2)
    assert value(cap, "spawn.requests", status="other") == 2
    assert len(logs(cap, "Unknown spawn response status 'exploded'")) == 1
    assert dict(cap.spans_by_category("spawn")[0].attributes or {})["clawdbot.status"] == "other"


def test_missing_status_is_read_from_the_fields(cap: Capture, queue: Queue) -> None:
    queue.request("ok")
    queue.request("bad")
    queue.respond("ok", None)
    queue.respond("bad", None, sessionKey=None, error={"message": "no capacity"})
    queue.scan()
    assert value(cap, "spawn.requests", status="success") == 1
    assert value(cap, "spawn.requests", status="failure") == 1


def test_picked_up_is_not_pending_and_not_counted_until_final(cap: Capture, queue: Queue) -> None:
    queue.request("r1")
    path = queue.respond("r1", "processing", sessionKey=None)
    queue.scan()
    assert value(cap, "spawn.queue.depth") == 0
    assert value(cap, "spawn.requests", status="success") is None
    assert len(logs(cap, "Spawn request picked up")) == 1
    write_json(path, response("r1", "spawned"), mtime=T0 + 20)
    queue.scan(2)
    assert value(cap, "spawn.requests", status="success") == 1
    assert len(cap.spans_by_category("spawn")) == 1


def test_subagent_active_until_response_removed_or_completed(cap: Capture, queue: Queue) -> None:
    for rid in ("r1", "r2"):
        queue.request(rid)
        queue.respond(rid)
    queue.scan()
    assert value(cap, "spawn.subagent.active", model="opus") == 2
    (queue.root / "responses" / "r1.json").unlink()  # archived by the spawner
    write_json(queue.root / "responses" / "r2.json", response("r2", "completed"), mtime=T0 + 60)
    queue.scan(2)
    assert value(cap, "spawn.subagent.active", model="opus") == 0
    assert value(cap, "spawn.subagent", model="opus") == 2  # totals unchanged
    assert value(cap, "spawn.requests", status="success") == 2
    assert len(logs(cap, "Sub-agent no longer active")) == 2


def test_already_completed_response_is_spawned_but_not_active(cap: Capture, queue: Queue) -> None:
    queue.request("r1")
    queue.respond("r1", "completed")
    queue.scan()
    assert value(cap, "spawn.subagent", model="opus") == 1
    assert value(cap, "spawn.subagent.active", model="opus") is None


def test_request_removed_with_its_answer_still_gets_latency_and_span(cap: Capture, queue: Queue) -> None:
    req = queue.request("r1")
    queue.scan()
    req.unlink()  # the spawner deletes the request as it answers
    queue.respond("r1")
    queue.scan()
    assert histogram(cap, "spawn.queue.latency") == (1, 12.5)
    assert len(cap.spans_by_category("spawn")) == 1
    assert value(cap, "spawn.queue.depth") == 0


def test_response_without_a_known_request_counts_without_span(cap: Capture, queue: Queue) -> None:
    queue.respond("ghost")
    queue.scan()
    assert value(cap, "spawn.requests", status="success") == 1
    assert value(cap, "spawn.subagent", model="other") == 1
    assert cap.spans_by_category("spawn") == []
    assert histogram(cap, "spawn.queue.latency") == (0, 0.0)


def test_processed_before_requested_records_no_latency(cap: Capture, queue: Queue) -> None:
    queue.request("r1")
    queue.respond("r1", processedAt="2027-01-15T07:59:00Z")
    queue.scan()
    assert histogram(cap, "spawn.queue.latency") == (0, 0.0)
    [span] = cap.spans_by_category("spawn")
    assert span.end_time == span.start_time


def test_span_joins_the_trace_of_the_request(cap: Capture, queue: Queue) -> None:
    queue.request("r1", traceparent=TRACEPARENT)
    queue.respond("r1")
    queue.scan()
    [span] = cap.spans_by_category("spawn")
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"


def test_count_existing_false_tracks_but_does_not_recount_history(cap: Capture, tmp_path: Path,
                                                                  clock: FakeClock) -> None:
    queue = Queue(cap, tmp_path / "q", clock, count_existing=False)
    queue.request("old")
    queue.respond("old")
    queue.scan()
    assert value(cap, "spawn.requests", status="success") is None
    assert value(cap, "spawn.subagent.active", model="opus") == 1
    queue.request("new")
    queue.respond("new")
    queue.scan()
    assert value(cap, "spawn.requests", status="success") == 1


async def test_scan_loop_restart_counts_nothing_twice(cap: Capture, tmp_path: Path, clock: FakeClock) -> None:
    queue = Queue(cap, tmp_path / "q", clock, interval_s=0.01)
    queue.request("r1")
    queue.respond("r1")

    async def until_counted() -> None:
        while value(cap, "spawn.requests", status="success") != 1:
            await asyncio.sleep(0.01)

    queue.watcher.start()
    await asyncio.wait_for(until_counted(), 5)
    await queue.watcher.stop()
    async with queue.watcher:
        await asyncio.sleep(0.05)  # several scans
    assert value(cap, "spawn.requests", status="success") == 1
    assert len(cap.spans_by_category("spawn")) == 1


def test_state_is_forgotten_when_files_are_gone(cap: Capture, queue: Queue) -> None:
    req, resp = queue.request("r1"), queue.respond("r1")
    queue.scan()
    req.unlink()
    resp.unlink()
    queue.scan()
    # The id is forgotten (bounded memory): the same files appearing again are a new request.
    queue.request("r1")
    queue.respond("r1")
    queue.scan()
    assert value(cap, "spawn.requests", status="success") == 2


def test_close_stops_the_depth_gauge(cap: Capture, queue: Queue) -> None:
    queue.request("r1")
    queue.scan()
    queue.watcher.close()
    assert value(cap, "spawn.queue.depth") is None

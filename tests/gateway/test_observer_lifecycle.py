"""FrameObserver beyond the captures: shutdown, runs started by chat.send, config audit, frame direction."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.frames import frame_from_dict
from clawdbot_otel.gateway import FrameObserver
from clawdbot_otel.testing import Capture, capture_telemetry

_NS = 1_000_000_000
_T0_MS = 1_800_000_000_000


@pytest.fixture
def cap() -> Any:
    with capture_telemetry() as capture:
        yield capture


def _agent_event(run_id: str, seq: int, ms: int, stream: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "event": "agent", "payload": {
        "runId": run_id, "sessionKey": "agent:main:main", "agentId": "main", "stream": stream, "data": data,
        "seq": seq, "ts": ms}}


def _feed(observer: FrameObserver, conn: str, direction: str, frame: dict[str, Any], ms: int) -> None:
    parsed = frame_from_dict(frame)
    if frame["type"] == "req" and direction == "c2s":
        observer.request(conn, parsed, ms * 1_000_000)  # type: ignore[arg-type]
    else:
        observer.frame(conn, direction, parsed, ms * 1_000_000)


def test_close_ends_open_runs_at_their_last_frame_not_in_the_future(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("c")
    _feed(observer, "c", "c2s", {"type": "req", "id": "1", "method": "agent",
                                 "params": {"message": "hi", "idempotencyKey": "run-1"}}, _T0_MS)
    _feed(observer, "c", "s2c", _agent_event("run-1", 1, _T0_MS + 10, "lifecycle",
                                             {"phase": "start", "startedAt": _T0_MS + 10}), _T0_MS + 10)
    _feed(observer, "c", "s2c", _agent_event("run-1", 2, _T0_MS + 20, "lifecycle",
                                             {"phase": "model", "provider": "p", "model": "claude-opus-4-5"}),
          _T0_MS + 20)
    _feed(observer, "c", "s2c", _agent_event("run-1", 3, _T0_MS + 500, "item", {
        "kind": "tool", "name": "ls", "toolCallId": "call-1", "phase": "start", "startedAt": _T0_MS + 500}),
        _T0_MS + 500)
    stop_ns = (_T0_MS + 60_000) * 1_000_000  # the gateway stops a minute later
    observer.close(stop_ns)
    assert observer.open_runs == 0 and observer.open_requests == 0
    (session,) = cap.spans_by_category("session")
    assert session.end_time == (_T0_MS + 500) * 1_000_000  # its last frame
    assert session.status.status_code is StatusCode.ERROR
    assert session.status.description == "gateway stopped before the run finished"
    for span in cap.finished_spans():
        assert span.end_time is not None and span.end_time <= stop_ns
    (request,) = cap.spans_by_category("request")
    assert request.end_time == stop_ns  # the client waited until then
    (duration,) = cap.metric_points("session.duration")
    assert duration.sum == pytest.approx(0.49)


def test_a_run_started_by_chat_send_is_parented_on_its_request(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("ui")
    _feed(observer, "ui", "c2s", {"type": "req", "id": "7", "method": "chat.send", "params": {
        "sessionKey": "agent:main:main", "message": "hello", "idempotencyKey": "idem-1"}}, _T0_MS)
    _feed(observer, "ui", "s2c", {"type": "res", "id": "7", "ok": True,
                                  "payload": {"runId": "idem-1", "status": "started"}}, _T0_MS + 5)
    _feed(observer, "ui", "s2c", _agent_event("idem-1", 1, _T0_MS + 10, "lifecycle",
                                              {"phase": "start", "startedAt": _T0_MS + 10}), _T0_MS + 10)
    _feed(observer, "ui", "s2c", _agent_event("idem-1", 2, _T0_MS + 900, "lifecycle",
                                              {"phase": "end", "startedAt": _T0_MS + 10, "endedAt": _T0_MS + 900}),
          _T0_MS + 900)
    (request,) = cap.spans_by_category("request")
    (session,) = cap.spans_by_category("session")
    assert session.parent is not None and session.parent.span_id == request.context.span_id
    assert session.context.trace_id == request.context.trace_id


def test_config_changes_through_the_gateway_are_audited(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("c")
    _feed(observer, "c", "c2s", {"type": "req", "id": "1", "method": "connect",
                                 "params": {"client": {"id": "openclaw-control-ui"}, "auth": {"token": "t"}}}, _T0_MS)
    _feed(observer, "c", "s2c", {"type": "res", "id": "1", "ok": True, "payload": {"type": "hello-ok"}}, _T0_MS)
    _feed(observer, "c", "c2s", {"type": "req", "id": "2", "method": "config.patch",
                                 "params": {"patch": {"gateway": {"port": 18790}}}}, _T0_MS + 1)
    _feed(observer, "c", "s2c", {"type": "res", "id": "2", "ok": True, "payload": {}}, _T0_MS + 2)
    _feed(observer, "c", "c2s", {"type": "req", "id": "3", "method": "config.set", "params": {"raw": "{}"}},
          _T0_MS + 3)
    _feed(observer, "c", "s2c", {"type": "res", "id": "3", "ok": False,
                                 "error": {"code": "FORBIDDEN", "message": "missing scope: operator.admin"}},
          _T0_MS + 4)
    audit = [r for r in cap.log_lines() if r["component"] == "audit"]
    assert [(r["message"], r["level"]) for r in audit] == [
        ("auth.success", "INFO"), ("config.change", "INFO"), ("config.change", "WARN")]
    assert audit[1]["metadata"]["method"] == "config.patch"
    assert audit[1]["metadata"]["actor"] == "openclaw-control-ui"
    assert audit[2]["metadata"]["error"] == "missing scope: operator.admin"


def test_responses_and_events_from_the_client_are_counted_not_believed(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("c")
    _feed(observer, "c", "c2s", {"type": "req", "id": "1", "method": "health"}, _T0_MS)
    _feed(observer, "c", "c2s", {"type": "res", "id": "1", "ok": True, "payload": {}}, _T0_MS + 1)  # forged
    _feed(observer, "c", "c2s", _agent_event("run-x", 1, _T0_MS + 2, "lifecycle", {"phase": "start"}), _T0_MS + 2)
    assert observer.open_requests == 1 and observer.open_runs == 0
    reasons = {p.attributes["reason"]: p.value for p in cap.metric_points("clawdbot_otel.source_errors")}
    assert reasons == {"unexpected_c2s_res": 1, "unexpected_c2s_event": 1}


def test_a_job_that_never_finishes_stops_counting_as_active(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry, run_timeout_s=60)
    observer.connection_opened("c")
    _feed(observer, "c", "s2c", {"type": "event", "event": "cron", "payload": {
        "jobId": "j1", "jobName": "nightly", "action": "started", "runAtMs": _T0_MS}}, _T0_MS)
    assert {p.value for p in cap.metric_points("scheduler.jobs.active")} == {1}
    observer.sweep((_T0_MS + 61_000) * 1_000_000)
    assert {p.value for p in cap.metric_points("scheduler.jobs.active")} == {0}


def test_schedule_changes_are_logged_and_a_removed_job_has_no_next_run(cap: Capture) -> None:
    """OpenClaw broadcasts cron `added`/`updated`/`removed`: the design's schedule-modification logs."""
    observer = FrameObserver(cap.telemetry, clock=lambda: _T0_MS * 1_000_000)
    observer.connection_opened("c")
    for i, action in enumerate(("added", "updated", "removed")):
        _feed(observer, "c", "s2c", {"type": "event", "event": "cron", "payload": {
            "jobId": "j1", "jobName": "nightly", "action": action, "nextRunAtMs": _T0_MS + 60_000 * (i + 1)}},
            _T0_MS + i)
        if action == "updated":
            assert {p.value for p in cap.metric_points("scheduler.next_run")} == {120.0}
    schedule = [(r["component"], r["message"], r["metadata"]["job_name"]) for r in cap.log_lines()
                if r["component"] == "scheduler"]
    assert schedule == [("scheduler", "Job scheduled", "nightly"), ("scheduler", "Job schedule modified", "nightly"),
                        ("scheduler", "Job removed", "nightly")]
    assert cap.metric_points("scheduler.next_run") == []


def test_the_model_call_ends_when_the_model_asks_for_a_tool(cap: Capture) -> None:
    observer = FrameObserver(cap.telemetry)
    observer.connection_opened("c")
    events = [
        (10, "lifecycle", {"phase": "start", "startedAt": _T0_MS + 10}),
        (20, "lifecycle", {"phase": "model", "provider": "p", "model": "m"}),
        (300, "item", {"kind": "tool", "name": "sleep", "toolCallId": "t1", "phase": "start",
                       "startedAt": _T0_MS + 300}),
        (5300, "item", {"kind": "tool", "name": "sleep", "toolCallId": "t1", "phase": "end", "status": "completed",
                        "startedAt": _T0_MS + 300, "endedAt": _T0_MS + 5300}),
        (5400, "lifecycle", {"phase": "model", "provider": "p", "model": "m"}),
        (5600, "lifecycle", {"phase": "end", "startedAt": _T0_MS + 10, "endedAt": _T0_MS + 5600}),
    ]
    for seq, (dt, stream, data) in enumerate(events, 1):
        _feed(observer, "c", "s2c", _agent_event("r", seq, _T0_MS + dt, stream, data), _T0_MS + dt)
    first, second = sorted(cap.spans_by_category("model_call"), key=lambda s: s.start_time or 0)
    assert ((first.end_time or 0) - (first.start_time or 0)) / _NS == pytest.approx(0.28)  # not the tool's 5 s
    assert ((second.end_time or 0) - (second.start_time or 0)) / _NS == pytest.approx(0.2)


def test_with_the_openclaw_state_read_cron_and_task_events_are_left_to_it(cap: Capture) -> None:
    """`gateway --upstream` with local OpenClaw state: the state reader counts every run, connected or not,
    so the frame observer must not count the same runs from the events a connected client happens to see."""
    observer = FrameObserver(cap.telemetry, count_cron=False, count_tasks=False)
    observer.connection_opened("c")
    _feed(observer, "c", "s2c", {"type": "event", "event": "cron", "payload": {
        "jobId": "j1", "jobName": "nightly", "action": "finished", "status": "ok", "runAtMs": _T0_MS,
        "durationMs": 10}}, _T0_MS + 10)
    _feed(observer, "c", "s2c", {"type": "event", "event": "task", "payload": {"task": {
        "taskId": "t1", "status": "succeeded", "createdAt": _T0_MS, "startedAt": _T0_MS, "endedAt": _T0_MS + 10}}},
        _T0_MS + 10)
    assert cap.metric_points("scheduler.jobs") == [] and cap.metric_points("task.completion") == []
    assert cap.spans_by_category("job") == []


@pytest.mark.parametrize("untraced", [None, ("health", "status"), ()], ids=["default", "listed", "none"])
def test_successful_requests_of_untraced_methods_are_counted_and_make_no_span(
        cap: Capture, untraced: tuple[str, ...] | None) -> None:
    """The tracing policy (CLAWDBOT_OTEL_UNTRACED_METHODS, default `health`): a listed method's request that
    succeeds is counted but makes no span; one that fails or times out keeps its full span."""
    observer = FrameObserver(cap.telemetry, request_timeout_s=1, untraced_methods=untraced)
    observer.connection_opened("c")
    for n, method in enumerate(("health", "status", "health", "health", "sessions.list")):
        _feed(observer, "c", "c2s", {"type": "req", "id": str(n), "method": method}, _T0_MS + n)
    ok = {"type": "res", "ok": True, "payload": {}}
    _feed(observer, "c", "s2c", {**ok, "id": "0"}, _T0_MS + 10)
    _feed(observer, "c", "s2c", {**ok, "id": "1"}, _T0_MS + 11)
    _feed(observer, "c", "s2c", {"type": "res", "id": "2", "ok": False, "error": {"code": "UNAVAILABLE",
                                                                                  "message": "down"}}, _T0_MS + 12)
    _feed(observer, "c", "s2c", {**ok, "id": "4"}, _T0_MS + 14)
    assert observer.sweep((_T0_MS + 5_000) * 1_000_000) == 1  # request 3 never got its answer
    listed = {"health"} if untraced is None else set(untraced)
    spans = {s.attributes["clawdbot.request.id"]: s for s in cap.spans_by_category("request")}
    expected = {"2", "3"} | {i for i, m in (("0", "health"), ("1", "status"), ("4", "sessions.list"))
                             if m not in listed}
    assert set(spans) == expected
    assert spans["2"].status.status_code is StatusCode.ERROR and spans["2"].attributes["error.type"] == "runtime"
    assert spans["3"].status.status_code is StatusCode.ERROR and spans["3"].attributes["clawdbot.status"] == "timeout"
    counted = {(p.attributes["method"], p.attributes["status"]): p.value
               for p in cap.metric_points("gateway.requests")}
    assert counted == {("health", "success"): 1, ("status", "success"): 1, ("health", "failure"): 1,
                       ("health", "timeout"): 1, ("sessions.list", "success"): 1}
    latency = {p.attributes["method"]: p.count for p in cap.metric_points("gateway.request.latency")}
    assert latency == {"health": 3, "status": 1, "sessions.list": 1}


def test_the_untraced_methods_setting() -> None:
    from clawdbot_otel.gateway._requests import untraced_methods

    assert untraced_methods({}) == {"health"}
    assert untraced_methods({"CLAWDBOT_OTEL_UNTRACED_METHODS": ""}) == set()
    assert untraced_methods({"CLAWDBOT_OTEL_UNTRACED_METHODS": " health , status,,"}) == {"health", "status"}

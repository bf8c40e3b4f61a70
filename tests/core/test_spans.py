"""Span categories through the facade: attributes, GenAI conventions, parentage, errors, decorators."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from clawdbot_otel import TelemetryError, correlation
from clawdbot_otel.testing import capture_telemetry


def test_each_category_helper_carries_its_attributes_and_genai_conventions() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry
        with t.request_span("agent", request_id="r1", body={"message": "hi", "agentId": "main"}) as req:
            with t.session_span("main", model="claude-sonnet-4-5", provider="anthropic",
                                session_key="agent:main:subagent:abc", run_id="run-1") as session:
                with t.model_call_span("claude-sonnet-4-5", provider="anthropic"):
                    pass
                with t.tool_call_span("read", call_id="call-1", params={"path": "/etc/hosts"}):
                    pass
                session.update({"gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30})
            with t.spawn_span("research", model="claude-haiku-4-5", task="Find X\nthen Y", request_id="q1"):
                pass
            with t.message_span("main", "worker", "task", message_id="m1"):
                pass
            with t.validation_span("L2", task_id="t1") as v:
                v.update({"clawdbot.validation.result": "pass"})
        spans = {s.attributes["clawdbot.span.category"]: s for s in cap.finished_spans()}
        assert spans["request"].name == "gateway.request agent"
        assert spans["request"].kind is SpanKind.SERVER
        assert spans["request"].attributes["clawdbot.request.body_summary"] == "keys: agentId,message"
        s = spans["session"]
        assert s.name == "invoke_agent main"
        assert s.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert s.attributes["gen_ai.agent.name"] == "main"
        assert s.attributes["gen_ai.request.model"] == "claude-sonnet-4-5"
        assert s.attributes["gen_ai.usage.input_tokens"] == 120
        assert s.attributes["clawdbot.session.type"] == "subagent"
        assert s.attributes["clawdbot.session.model"] == "sonnet"
        assert s.parent.span_id == req.span.get_span_context().span_id
        tool = spans["tool_call"]
        assert tool.name == "execute_tool read"
        assert tool.attributes["gen_ai.tool.call.id"] == "call-1"
        assert "gen_ai.tool.call.arguments" not in tool.attributes  # content capture is opt-in
        assert tool.parent.span_id == s.context.span_id
        assert spans["model_call"].name == "chat claude-sonnet-4-5"
        assert spans["spawn"].attributes["clawdbot.spawn.task_summary"] == "Find X"
        assert spans["spawn"].attributes["clawdbot.spawn.model"] == "haiku"
        assert spans["message"].attributes["messaging.destination.name"] == "worker"
        assert spans["validation"].attributes["clawdbot.validation.layer"] == "L2"
        assert {sp.context.trace_id for sp in cap.finished_spans()} == {req.span.get_span_context().trace_id}


def test_captured_tool_params_are_redacted_and_truncated_when_capture_is_on() -> None:
    with capture_telemetry(capture_content=True) as cap:
        params = {"url": "https://user:hunter2@example.com/", "api_key": "sk-abcdefghijklmnopqrstu", "body": "y" * 5000}
        with cap.telemetry.tool_call_span("fetch", params=params):
            pass
        (span,) = cap.finished_spans()
        captured = span.attributes["gen_ai.tool.call.arguments"]
        assert "hunter2" not in captured and "sk-abcdefghijklmnopqrstu" not in captured
        assert "[REDACTED:api-key]" in captured and "[REDACTED:url-credentials]" in captured
        assert len(captured) < 1200


def test_an_exception_marks_the_span_as_error_and_propagates() -> None:
    with capture_telemetry() as cap:
        with pytest.raises(TimeoutError), cap.telemetry.tool_call_span("slow"):
            raise TimeoutError("took too long")
        (span,) = cap.finished_spans()
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "TimeoutError"
        assert span.events[0].name == "exception"


async def test_decorators_and_async_context_managers_make_one_span_per_call() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry

        @t.job_span("nightly")
        async def job(n: int) -> int:
            await asyncio.sleep(0)
            return n * 2

        @t.validation_span("L1")
        def check() -> bool:
            return True

        assert await job(2) == 4
        assert await job(3) == 6
        assert check()
        async with t.session_span("main"):
            pass
        names = sorted(s.name for s in cap.finished_spans())
        assert names == ["cron.job nightly", "cron.job nightly", "invoke_agent main", "validate L1"]


def test_a_traceparent_string_continues_the_callers_trace() -> None:
    with capture_telemetry() as cap:
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with cap.telemetry.request_span("agent", parent=parent) as span:
            assert span.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
        (finished,) = cap.finished_spans()
        assert finished.parent.span_id == 0xB7AD6B7169203331


async def test_correlation_id_reaches_spans_and_logs_across_create_task_and_gather() -> None:
    with capture_telemetry() as cap:
        t = cap.telemetry

        async def work(i: int) -> None:
            await asyncio.sleep(0)
            with t.tool_call_span(f"tool{i}"):
                t.log("INFO", "session", f"work {i}")

        with correlation("req-42"):
            task = asyncio.create_task(work(0))
            await asyncio.gather(work(1), work(2))
            await task
        assert [s.attributes["clawdbot.correlation_id"] for s in cap.finished_spans()] == ["req-42"] * 3
        assert [r["correlation_id"] for r in cap.log_lines()] == ["req-42"] * 3
        assert {r.log_record.attributes["correlation_id"] for r in cap.otlp_logs()} == {"req-42"}


def test_unknown_category_or_attribute_strict_and_production() -> None:
    with capture_telemetry(strict=True) as cap:
        with pytest.raises(TelemetryError, match="did you mean tool_call"):
            cap.telemetry.start_span("toolcall")
        with pytest.raises(TelemetryError, match=r"has no attribute 'gen_ai\.tool\.nam'"):
            cap.telemetry.start_span("tool_call", attributes={"gen_ai.tool.nam": "x"}).start()
    with capture_telemetry(strict=False) as cap:
        with cap.telemetry.start_span("toolcall", attributes={"x": 1}):
            pass
        (span,) = cap.finished_spans()
        assert span.attributes["clawdbot.span.category"] == "other"
        reasons = {p.attributes["reason"] for p in cap.metric_points("clawdbot_otel.dropped")}
        assert reasons == {"unknown_span_category", "unknown_attribute"}


@pytest.mark.parametrize("tool_name", ["{gen_ai.tool.name}", "{", "}", "a{b}c", "{0}"])
def test_names_from_frames_are_never_parsed_as_span_name_templates(tool_name: str) -> None:
    # Tool and method names come from gateway frames: a name that looks like a template must neither
    # hang (re-substitution) nor raise; it appears in the span name as it is.
    with capture_telemetry(strict=False) as cap:
        with cap.telemetry.tool_call_span(tool_name):
            pass
        with cap.telemetry.request_span(tool_name):
            pass
        tool, request = cap.finished_spans()
        assert tool.name == f"execute_tool {tool_name}"
        assert request.name == f"gateway.request {tool_name}"


def test_an_unknown_category_named_like_a_template_keeps_its_name_in_production() -> None:
    with capture_telemetry(strict=False) as cap:
        with cap.telemetry.start_span("{weird"):
            pass
        (span,) = cap.finished_spans()
        assert span.name == "{weird"
        assert cap.telemetry.dropped[("unknown_span_category", "span")] == 1


def test_a_bad_parent_is_counted_in_production_and_raises_in_strict() -> None:
    with capture_telemetry(strict=False) as cap:
        with cap.telemetry.session_span("main", parent=42):
            pass
        (span,) = cap.finished_spans()
        assert span.parent is None
        assert cap.telemetry.dropped[("invalid_parent", "span:session")] == 1
    with capture_telemetry() as cap, pytest.raises(TelemetryError, match="parent must be"):
        cap.telemetry.session_span("main", parent=42).start()

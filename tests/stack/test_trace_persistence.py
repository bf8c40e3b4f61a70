"""Traces survive `stack down && stack up`: Jaeger keeps them in Badger under the stack's data folder.

A stack of its own (its own directory, ports shifted 400 past the session stack's), so that stopping it
disturbs no other test: a trace sent through the collector before `down` is found by id after `up`.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from clawdbot_otel.stack import StackError, StackInfo, down, up

from .conftest import RunningStack, http_json, wait_for

pytestmark = pytest.mark.stack


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _up(root: Path, stack: RunningStack) -> StackInfo:
    try:
        return up(root=root, ports=stack.ports.shifted(400), binaries=stack.binaries, timeout=180,
                  collector_extra_env={"CLAWDBOT_OTEL_DECISION_WAIT": "1s"}, progress=_progress)
    except StackError as exc:
        pytest.fail(f"the restart test's stack could not be started: {exc}", pytrace=False)


def _send_trace(otlp_grpc: str, service: str) -> str:
    """One trace of two spans, one of them an error (kept by the tail-sampling policy whatever the dice say)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_grpc, insecure=True)))
    tracer = provider.get_tracer("restart-test")
    with tracer.start_as_current_span("before-restart") as root, tracer.start_as_current_span("child") as child:
        child.set_status(Status(StatusCode.ERROR, "kept by tail sampling"))
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()  # flushes
    return trace_id


def _trace_spans(info: StackInfo, trace_id: str) -> list[str]:
    status, body = http_json(f"{info.jaeger_url}/api/traces/{trace_id}")
    if status != 200:
        return []
    return sorted(s["operationName"] for s in body["data"][0]["spans"])


def test_traces_survive_stack_down_and_up(stack: RunningStack, tmp_path: Path) -> None:
    root = tmp_path / "stack"
    service = f"restart-{uuid.uuid4().hex[:8]}"
    info = _up(root, stack)
    try:
        trace_id = _send_trace(info.otlp_grpc_endpoint, service)
        wait_for(lambda: _trace_spans(info, trace_id), 60, 0.5, f"trace {trace_id} in Jaeger before the restart")
        down(root, progress=_progress)
        badger = root / "data" / "jaeger"
        assert all(any((badger / d).iterdir()) for d in ("keys", "values")), f"no Badger files in {badger}"
        info = _up(root, stack)
        assert _trace_spans(info, trace_id) == ["before-restart", "child"]
        status, body = http_json(f"{info.jaeger_url}/api/services")
        assert status == 200 and service in body["data"]
    finally:
        down(root, progress=_progress)

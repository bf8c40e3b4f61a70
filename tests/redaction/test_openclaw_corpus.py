"""The stretch of the corpus: REAL OpenClaw turns (npm openclaw, the scripted fake model) whose message, tool
output and model error text carry keys, through our proxy with content capture on: no key in any span, log or
metric. (OpenClaw masks tool output itself before the model sees it; the request and its events still pass
through our hands with the keys.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from clawdbot_otel.testing import capture_telemetry
from tests.gateway.test_real_openclaw_proxy import _ProxyThread
from tests.openclaw.fake_model import ErrorReply, FakeModelServer, TextReply, ToolCallReply
from tests.openclaw.harness import OpenClawGateway

from .corpus import CORPUS

pytestmark = pytest.mark.openclaw


def test_a_real_turn_with_keys_in_tool_output_and_model_error_leaks_none(
        openclaw_gateway: OpenClawGateway, fake_model: FakeModelServer, tmp_path: Path) -> None:
    secrets_file = tmp_path / "deploy.env"
    secrets_file.write_text("\n".join(s.text for s in CORPUS) + "\n")
    provider_key = next(s for s in CORPUS if s.kind == "anthropic-key")
    with capture_telemetry(capture_content=True) as cap, \
            _ProxyThread(cap, openclaw_gateway.url, openclaw_gateway.token) as server:
        fake_model.enqueue(ToolCallReply("read", {"path": str(secrets_file)}, call_id="call_rd_env"),
                           TextReply("Read it."))
        # the keys pass through the proxy in the request (content capture records its body) and, where
        # OpenClaw does not mask them itself (it masks tool output before the model sees it), in its events
        message = f"read {secrets_file}; context:\n" + "\n".join(s.text for s in CORPUS)
        tool_turn = openclaw_gateway.run_agent_turn(message, server.url,
                                                    session_key=f"agent:main:redact-{uuid.uuid4().hex[:8]}")
        assert tool_turn.returncode == 0, tool_turn.stderr[-2000:]
        fake_model.set_default(ErrorReply(401, f"invalid x-api-key {provider_key.text.split()[-1]}"))
        failed = openclaw_gateway.run_agent_turn("say hi", server.url,
                                                 session_key=f"agent:main:redact-{uuid.uuid4().hex[:8]}")
        assert failed.returncode != 0
        fake_model.set_default(TextReply())
        assert server.observer_errors == []
        spans = cap.finished_spans()
        outputs = "".join(s.to_json() for s in spans) + cap.log_stream.getvalue().decode()
        outputs += repr(cap.collect_metrics()) + repr([(r.log_record.body, r.log_record.attributes)
                                                       for r in cap.otlp_logs()])
    assert [s.kind for s in CORPUS if s.payload in outputs] == []
    assert openclaw_gateway.token not in outputs
    assert any(s.attributes.get("gen_ai.tool.name") == "read" for s in spans if s.attributes)
    assert "[REDACTED:" in outputs

"""The redactor: every format of the corpus, the settings, and what it must leave alone."""

from __future__ import annotations

import pytest
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clawdbot_otel import Redactor
from clawdbot_otel._redact_spans import redact_span
from clawdbot_otel.testing import capture_telemetry

from .corpus import CORPUS, Sample
from .drive_api import push

_PLUGINS = get_mapping_from_secret_type_to_class()
# detect-secrets' plugin for the formats it has one for (the others are ours: see _redact's docstring)
_PLUGIN_OF_KIND = {
    "openai-key": "OpenAI Token", "github-token": "GitHub Token", "gitlab-token": "GitLab Token",
    "slack-token": "Slack Token", "aws-access-key": "AWS Access Key", "stripe-key": "Stripe Access Key",
    "jwt": "JSON Web Token", "url-credentials": "Basic Auth Credentials", "private-key": "Private Key",
}
# formats, not guesses: the high-entropy plugins flag any quoted word and are opt-in here too
_FORMAT_PLUGINS = [cls() for name, cls in _PLUGINS.items() if "High Entropy" not in name]


@pytest.mark.parametrize("sample", CORPUS, ids=[s.kind for s in CORPUS])
def test_each_format_is_hidden_and_says_its_kind(sample: Sample) -> None:
    out = Redactor().scrub(sample.text)
    assert sample.payload not in out
    assert f"[REDACTED:{sample.kind}]" in out


@pytest.mark.parametrize("sample", [s for s in CORPUS if s.kind in _PLUGIN_OF_KIND], ids=lambda s: s.kind)
def test_the_samples_are_what_detect_secrets_itself_finds(sample: Sample) -> None:
    plugin = _PLUGINS[_PLUGIN_OF_KIND[sample.kind]]()
    assert list(plugin.analyze_string(sample.text)), f"{type(plugin).__name__} does not see the sample"


def test_nothing_detect_secrets_finds_is_left_after_redaction() -> None:
    redactor = Redactor()
    for sample in CORPUS:
        out = redactor.scrub(sample.text)
        left = {type(p).__name__: list(p.analyze_string(out)) for p in _FORMAT_PLUGINS}
        assert not any(left.values()), (sample.kind, out, left)


@pytest.mark.parametrize("line", [
    "Job completed in 1.25s", "basic setup done", "bearer authentication failed for client cli",
    "input_tokens=123 output_tokens=45 max_tokens: 100", "session_key=agent:main:subagent:7f3c",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7", "model claude-opus-4-5 via anthropic",
    "GET https://docs.example/path?q=monkey&page=2", "file /home/u/clawd/scheduler/spawn-queue/requests/a.json",
    "ask-ant-farm about the keyboard", "Authorization header missing",
])
def test_ordinary_lines_pass_unchanged(line: str) -> None:
    assert Redactor().scrub(line) == line


def test_high_entropy_words_are_hidden_only_when_asked() -> None:
    word = "Zx8Qp3Lm0Vb7Nc2Kd9Fg4Hj6Ts1Wr5Ye"  # no format a rule knows, just random-looking
    line = f"opaque credential {word} rejected"
    assert Redactor().scrub(line) == line
    assert Redactor(entropy=True).scrub(line) == "opaque credential [REDACTED:high-entropy] rejected"
    assert Redactor.from_env({"CLAWDBOT_OTEL_REDACT_ENTROPY": "1"}).scrub(line) != line


def test_extra_patterns_and_allowed_keys_come_from_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    redactor = Redactor.from_env({
        "CLAWDBOT_OTEL_REDACT_PATTERNS": r'["acme-[0-9]{6}", "employee=(\\d+)", "broken(["]',
        "CLAWDBOT_OTEL_REDACT_ALLOW_KEYS": "auth_method, Token_Count",
    })
    assert redactor.scrub("license acme-123456 for employee=42") == (
        "license [REDACTED:custom] for employee=[REDACTED:custom]")
    assert capsys.readouterr().err.startswith("clawdbot-otel: redaction pattern 'broken([' is not a regular expression")
    assert redactor.mapping({"auth_method": "token", "token_count": 3, "token": "x1"}) == {
        "auth_method": "token", "token_count": 3, "token": "[REDACTED:token]"}
    lines = Redactor.from_env({"CLAWDBOT_OTEL_REDACT_PATTERNS": "acme-[0-9]{6}\nzeta-\\w+"})
    assert lines.scrub("acme-000001 zeta-q") == "[REDACTED:custom] [REDACTED:custom]"
    assert redactor.settings == "21 built-in rules, 2 custom; allowed keys: auth_method,token_count; high-entropy: off"


def test_secret_keys_say_what_they_held() -> None:
    out = Redactor().mapping({"db_password": "p", "x-api-key": "k", "access_token": "t", "client_secret": "s",
                              "session_key": "agent:main:main", "input_tokens": 5})
    assert out == {"db_password": "[REDACTED:password]", "x-api-key": "[REDACTED:api-key]",
                   "access_token": "[REDACTED:token]", "client_secret": "[REDACTED:secret]",
                   "session_key": "agent:main:main", "input_tokens": 5}


def test_a_known_secret_is_hidden_wherever_it_appears() -> None:
    redactor = Redactor()
    redactor.add_secret("gw-7f3c9e2a", "gateway-token")
    redactor.add_secret("gw-7f3c9e2a", "gateway-token")  # once is enough
    redactor.add_secret("ab", "gateway-token")  # too short to hide without mangling everything
    assert redactor.scrub("connect with gw-7f3c9e2a from ab") == "connect with [REDACTED:gateway-token] from ab"
    assert redactor.settings.startswith("21 built-in rules, 1 custom")


def test_every_span_surface_and_label_value_is_redacted() -> None:
    key = next(s for s in CORPUS if s.kind == "github-token")
    provider = next(s for s in CORPUS if s.kind == "anthropic-key")
    with capture_telemetry(capture_content=True) as cap:
        push(cap.telemetry, key.text)
        push(cap.telemetry, provider.text)
        spans = cap.finished_spans()
        dumped = "".join(s.to_json() for s in spans) + cap.log_stream.getvalue().decode()
        points = cap.metric_points("session.tool_calls")
        dumped += repr(cap.collect_metrics()) + repr([r.log_record.body for r in cap.otlp_logs()])
    assert key.payload not in dumped and provider.payload not in dumped
    tool = next(s for s in spans if s.attributes and s.attributes.get("gen_ai.tool.name") == "exec")
    assert tool.status.description == "ProviderError: git push https://x-access-token:[REDACTED:github-token]" \
        "@github.com/acme/app.git failed: exit 128"
    exception = next(e for e in tool.events if e.name == "exception")
    assert exception.attributes is not None
    assert "[REDACTED:github-token]" in str(exception.attributes["exception.message"])
    assert "[REDACTED:github-token]" in str(exception.attributes["exception.stacktrace"])
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.call.result"] == key.text.replace("ghp_" + key.payload, "[REDACTED:github-token]")
    assert any(s.name.endswith("[REDACTED:anthropic-key]") for s in spans)
    assert "provider refused Authorization: Bearer [REDACTED:anthropic-key]" in {p.attributes["tool_name"] for p in points}


def test_a_span_whose_strings_only_look_like_secrets_is_exported_as_it_is() -> None:
    """"keys: idempotencyKey" has a marker (key) but no secret: checked once, then never copied again."""
    finished = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(finished))
    for _ in range(2):
        with provider.get_tracer("test").start_as_current_span("gateway.request agent", attributes={
                "clawdbot.request.body_summary": "keys: agentId,idempotencyKey,message"}):
            pass
    redactor = Redactor()
    assert [redact_span(s, redactor) is s for s in finished.get_finished_spans()] == [False, True]
    secret = next(s for s in CORPUS if s.kind == "github-token")
    for _ in range(2):  # a real secret is hidden every time
        assert secret.payload not in redactor.scrub(secret.text)


def test_a_registered_secret_is_hidden_in_spans_that_hold_it_and_other_spans_are_not_copied() -> None:
    """The proxy registers its gateway token: a span holding it is redacted, a span without it goes as it is."""
    finished = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("gateway.request health", attributes={"rpc.method": "health"}):
        pass
    with tracer.start_as_current_span("gateway.request connect", attributes={"error": "rejected gw-7f3c9e2a"}):
        pass
    redactor = Redactor()
    redactor.add_secret("gw-7f3c9e2a", "gateway-token")
    plain, holding = (redact_span(s, redactor) for s in finished.get_finished_spans())
    assert plain is finished.get_finished_spans()[0]
    assert holding.attributes is not None
    assert holding.attributes["error"] == "rejected [REDACTED:gateway-token]"

"""The design's six span categories (plus the two the collection points need), defined once.

Each carries the design's "captured data" as `clawdbot.*` attributes and, where an OTel GenAI
semantic convention exists, its `gen_ai.*` attributes too, so GenAI-aware tools read them as-is.
"""

from __future__ import annotations

from ._model import AttributeSpec, SpanCategory

__all__ = ["COMMON_ATTRIBUTES", "CORRELATION_ATTRIBUTE", "SPAN_CATEGORIES", "SPAN_CATEGORY_ATTRIBUTE"]

A = AttributeSpec

SPAN_CATEGORY_ATTRIBUTE = "clawdbot.span.category"
CORRELATION_ATTRIBUTE = "clawdbot.correlation_id"

#: Attributes any span may carry.
COMMON_ATTRIBUTES: tuple[AttributeSpec, ...] = (
    A(SPAN_CATEGORY_ATTRIBUTE, "string", "The span category (request, session, ...)"),
    A(CORRELATION_ATTRIBUTE, "string", "User-facing request identifier (W3C baggage correlation_id)"),
    A("error.type", "string", "Error class when the operation failed (OTel semconv)"),
    A("clawdbot.status", "string", "Operation result: success, failure or timeout"),
)

_GENAI_AGENT = (
    A("gen_ai.operation.name", "string", "GenAI operation: invoke_agent"),
    A("gen_ai.agent.name", "string", "Agent name", "session"),
    A("gen_ai.agent.id", "string", "Agent id", "session"),
    A("gen_ai.conversation.id", "string", "Session key (conversation id)", "session"),
    A("gen_ai.provider.name", "string", "Model provider", "model"),
    A("gen_ai.request.model", "string", "Requested model id", "model"),
    A("gen_ai.response.model", "string", "Model id that answered", "model"),
    A("gen_ai.usage.input_tokens", "int", "Input tokens", "tokens"),
    A("gen_ai.usage.output_tokens", "int", "Output tokens", "tokens"),
    A("gen_ai.usage.cache_read.input_tokens", "int", "Input tokens read from cache", "tokens"),
    A("gen_ai.usage.cache_creation.input_tokens", "int", "Input tokens written to cache", "tokens"),
    A("gen_ai.response.finish_reasons", "string[]", "Why the model stopped"),
)

SPAN_CATEGORIES: tuple[SpanCategory, ...] = (
    SpanCategory(
        "request", "Incoming gateway request", "gateway.request {rpc.method}", "server",
        (
            A("rpc.system", "string", "Always clawdbot.gateway"),
            A("rpc.method", "string", "Gateway protocol method", "method"),
            A("clawdbot.request.method", "string", "Gateway protocol method", "method"),
            A("clawdbot.request.id", "string", "Frame id of the request"),
            A("clawdbot.request.headers", "string", "Connection headers, secrets redacted", "headers"),
            A("clawdbot.request.body_summary", "string", "Params summary: keys and sizes, or the "
              "redacted, truncated params when content capture is on", "body summary"),
            A("clawdbot.request.body_bytes", "int", "Size of the request frame", "body summary"),
            A("clawdbot.connection.id", "string", "Connection the request came on"),
            A("clawdbot.client.id", "string", "Client id from the connect handshake"),
        ),
        captured_data="Method, headers, body summary",
    ),
    SpanCategory(
        "session", "Agent session (one agent run)", "invoke_agent {gen_ai.agent.name}", "internal",
        (
            *_GENAI_AGENT,
            A("clawdbot.session.key", "string", "Session key (agent:<id>:main, cron:<job>, ...)"),
            A("clawdbot.session.type", "string", "main, cron or subagent", "type"),
            A("clawdbot.session.model", "string", "Model family: opus, sonnet, haiku, other", "model"),
            A("clawdbot.session.run_id", "string", "Run id"),
            A("clawdbot.session.tokens", "int", "Total tokens of the run", "tokens"),
            A("clawdbot.session.cost_usd", "double", "Cost of the run in US dollars", "tokens"),
            A("clawdbot.session.duration_s", "double", "Run duration as the runtime reports it",
              "duration"),
            A("clawdbot.session.stop_reason", "string", "Why the run ended"),
        ),
        gen_ai_operation="invoke_agent",
        captured_data="Model, tokens, duration",
    ),
    SpanCategory(
        "model_call", "One model call inside a session (child of the session span)", "chat {gen_ai.request.model}",
        "client",
        (
            A("gen_ai.operation.name", "string", "GenAI operation: chat"),
            A("gen_ai.provider.name", "string", "Model provider"),
            A("gen_ai.request.model", "string", "Requested model id"),
            A("gen_ai.response.model", "string", "Model id that answered"),
            A("gen_ai.usage.input_tokens", "int", "Input tokens"),
            A("gen_ai.usage.output_tokens", "int", "Output tokens"),
            A("gen_ai.response.finish_reasons", "string[]", "Why the model stopped"),
            A("clawdbot.session.model", "string", "Model family"),
        ),
        gen_ai_operation="chat",
        source="ours (the session's model calls)",
    ),
    SpanCategory(
        "tool_call", "Tool invocation", "execute_tool {gen_ai.tool.name}", "internal",
        (
            A("gen_ai.operation.name", "string", "GenAI operation: execute_tool"),
            A("gen_ai.tool.name", "string", "Tool name", "tool name"),
            A("gen_ai.tool.call.id", "string", "Tool call id"),
            A("gen_ai.tool.type", "string", "function, extension or datastore"),
            A("gen_ai.tool.call.arguments", "string", "Params, redacted and truncated", "params",
              opt_in=True),
            A("gen_ai.tool.call.result", "string", "Result, redacted and truncated", "result",
              opt_in=True),
            A("clawdbot.tool.params_bytes", "int", "Size of the params", "params"),
            A("clawdbot.tool.result_bytes", "int", "Size of the result", "result"),
        ),
        gen_ai_operation="execute_tool",
        captured_data="Tool name, params, result",
    ),
    SpanCategory(
        "spawn", "Sub-agent spawn", "create_agent {clawdbot.spawn.label}", "internal",
        (
            A("gen_ai.operation.name", "string", "GenAI operation: create_agent"),
            A("gen_ai.request.model", "string", "Requested model id", "model"),
            A("clawdbot.spawn.label", "string", "Spawn label", "label"),
            A("clawdbot.spawn.model", "string", "Model family", "model"),
            A("clawdbot.spawn.task_summary", "string", "First line of the task, truncated",
              "task summary"),
            A("clawdbot.spawn.request_id", "string", "Spawn request id"),
            A("clawdbot.spawn.requested_by", "string", "Who asked for the spawn"),
            A("clawdbot.spawn.session_key", "string", "Session key of the spawned sub-agent"),
            A("clawdbot.spawn.queue_latency_s", "double", "Request-to-spawn time"),
        ),
        gen_ai_operation="create_agent",
        captured_data="Label, model, task summary",
    ),
    SpanCategory(
        "message", "Inbox message", "{messaging.operation.name} {messaging.destination.name}", "producer",
        (
            A("messaging.system", "string", "Always clawdbot.inbox"),
            A("messaging.operation.name", "string", "send, deliver or archive"),
            A("messaging.operation.type", "string", "send, receive or settle"),
            A("messaging.destination.name", "string", "Receiving agent's inbox", "to"),
            A("messaging.message.id", "string", "Message id"),
            A("clawdbot.message.from", "string", "Sending agent", "from"),
            A("clawdbot.message.to", "string", "Receiving agent", "to"),
            A("clawdbot.message.type", "string", "Message type", "type"),
            A("clawdbot.message.subject", "string", "Subject, redacted and truncated", opt_in=True),
            A("clawdbot.message.delivery_latency_s", "double", "Creation to delivery time"),
        ),
        captured_data="From, to, type",
    ),
    SpanCategory(
        "validation", "Validation check", "validate {clawdbot.validation.layer}", "internal",
        (
            A("clawdbot.validation.layer", "string", "L1, L2 or L3", "layer"),
            A("clawdbot.validation.result", "string", "pass or fail", "result"),
            A("clawdbot.validation.reason", "string", "Failure reason"),
            A("clawdbot.validation.evidence", "string", "Evidence, redacted and truncated", "evidence"),
            A("clawdbot.task.id", "string", "Task validated"),
        ),
        captured_data="Layer, result, evidence",
    ),
    SpanCategory(
        "job", "Scheduler (cron) job run", "cron.job {clawdbot.job.name}", "internal",
        (
            A("clawdbot.job.name", "string", "Job name"),
            A("clawdbot.job.id", "string", "Job id"),
            A("clawdbot.job.trigger", "string", "schedule, manual or catch-up"),
            A("clawdbot.job.next_run_s", "double", "Seconds to the next run after this one"),
        ),
        source="ours (the scheduler collection point)",
    ),
)

"""Span names and attribute names: OpenTelemetry GenAI semantic conventions plus `loom.*`.

Callers build attributes with these helpers rather than spelling keys by hand, so every
span carries the names GenAI-aware backends understand. The GenAI conventions are still
"development" status; the names follow opentelemetry-semantic-conventions 0.5x/0.6x
(`gen_ai.provider.name` replaced `gen_ai.system`; content goes in
`gen_ai.input.messages` / `gen_ai.output.messages`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from loomgraph.errors import NodeError

from .messages import Message
from .models import Model
from .observability import LinkableSpan, Span
from .usage import Usage

# --------------------------------------------------------------------------- span names

RUN_SPAN = "loom.run"
"""The root span of one run."""


def node_span_name(node: str) -> str:
    """`loom.node {node}`: one span per node visit, child of `loom.run`."""
    return f"loom.node {node}"


def chat_span_name(model: str) -> str:
    """`chat {model}`: one model call, child of its node span."""
    return f"chat {model}"


def tool_span_name(tool: str) -> str:
    """`execute_tool {tool}`: one tool call, child of its node span."""
    return f"execute_tool {tool}"


# --------------------------------------------------------------------------- attribute names

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
USER_ID = "user.id"

# Content: recorded only when the telemetry was built with capture_content=True.
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
CONTENT_ATTRIBUTES = frozenset(
    {
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_SYSTEM_INSTRUCTIONS,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
    }
)

# loomgraph's own attributes (no convention covers them).
LOOM_RUN_ID = "loom.run.id"
LOOM_PARENT_RUN_ID = "loom.run.parent_id"
LOOM_GRAPH_NAME = "loom.graph.name"
LOOM_GRAPH_HASH = "loom.graph.hash"
LOOM_RUN_STATUS = "loom.run.status"
LOOM_NODE_NAME = "loom.node.name"
LOOM_NODE_VISIT = "loom.node.visit"
LOOM_COST_USD = "loom.usage.cost_usd"
# On a run span's link: what the linked span is to it (`LinkKind`).
LOOM_LINK_KIND = "loom.link.kind"


class LinkKind(StrEnum):
    """What a run span links to: the run's first span (from a resume's)."""

    RUN_START = "run_start"


# Operation names (values of gen_ai.operation.name).
OP_CHAT = "chat"
OP_EXECUTE_TOOL = "execute_tool"
OP_INVOKE_AGENT = "invoke_agent"

# Metric names.
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_COST = "loom.usage.cost"


# --------------------------------------------------------------------------- attribute helpers


def _without_none(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def run_attributes(
    *,
    run_id: str,
    graph_name: str,
    graph_hash: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    parent_run_id: str | None = None,
    agent_name: str | None = None,
    model: Model | None = None,
) -> dict[str, Any]:
    """Attributes of the `loom.run` span; the session id becomes `gen_ai.conversation.id`,
    the agent's name `gen_ai.agent.name` (the graph's name for an agent with none), its
    model `gen_ai.request.model` and `gen_ai.provider.name` (required on an `invoke_agent`
    span and its duration)."""
    return _without_none(
        {
            GEN_AI_OPERATION_NAME: OP_INVOKE_AGENT,
            GEN_AI_PROVIDER_NAME: None if model is None else provider_of(model),
            GEN_AI_REQUEST_MODEL: None if model is None else model.name,
            GEN_AI_AGENT_NAME: agent_name or graph_name,
            GEN_AI_CONVERSATION_ID: session_id,
            LOOM_RUN_ID: run_id,
            LOOM_GRAPH_NAME: graph_name,
            LOOM_GRAPH_HASH: graph_hash,
            LOOM_PARENT_RUN_ID: parent_run_id,
            USER_ID: user_id,
        }
    )


# How a run ended that is an error of the `invoke_agent` operation: it gave no answer for a
# failure, a limit or a cap. Waiting for a person and a cancel are not errors.
ERROR_STATUSES = frozenset({"failed", "limit_reached", "budget_exhausted", "dead_letter"})


def error_type(error: BaseException) -> str:
    """`error.type` per the conventions: the exception's fully qualified class name."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def run_end_attributes(status: str, error: BaseException | None = None) -> dict[str, Any]:
    """Attributes of the `loom.run` span once the run ended: its status, and whether it failed.

    `loom.run.status`; for a run that ended in error (`ERROR_STATUSES`) also `error.type`: the
    class of its error (a node's failure: the error the node raised), else the status."""
    status = str(status)
    attributes: dict[str, Any] = {LOOM_RUN_STATUS: status}
    if status in ERROR_STATUSES:
        # The node's own error, as on the node span it escaped from (NodeError wraps it, once
        # per enclosing subgraph node).
        while isinstance(error, NodeError):
            error = error.cause
        attributes[ERROR_TYPE] = status if error is None else error_type(error)
    return attributes


def provider_of(model: object) -> str:
    """`gen_ai.provider.name` of a model (required on chat spans): its `provider` attribute
    (`anthropic`, `openai`, ...), else the top package of its class (`loomgraph` for the
    echo and scripted models)."""
    provider = getattr(model, "provider", None)
    if isinstance(provider, str) and provider:
        return provider
    return type(model).__module__.split(".")[0]


def node_attributes(*, node: str, run_id: str, visit: int | None = None) -> dict[str, Any]:
    """Attributes of a `loom.node {node}` span."""
    return _without_none({LOOM_NODE_NAME: node, LOOM_RUN_ID: run_id, LOOM_NODE_VISIT: visit})


def chat_attributes(
    *,
    model: str,
    provider: str | None = None,
    max_tokens: int | None = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """Attributes of a `chat {model}` span at its start."""
    return _without_none(
        {
            GEN_AI_OPERATION_NAME: OP_CHAT,
            GEN_AI_REQUEST_MODEL: model,
            GEN_AI_PROVIDER_NAME: provider,
            GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
            GEN_AI_CONVERSATION_ID: session_id,
        }
    )


def response_attributes(
    *,
    finish_reasons: Sequence[str] | str | None = None,
    response_model: str | None = None,
    response_id: str | None = None,
) -> dict[str, Any]:
    """Attributes describing a finished model response."""
    reasons = [finish_reasons] if isinstance(finish_reasons, str) else finish_reasons
    return _without_none(
        {
            GEN_AI_RESPONSE_FINISH_REASONS: None if reasons is None else list(reasons),
            GEN_AI_RESPONSE_MODEL: response_model,
            GEN_AI_RESPONSE_ID: response_id,
        }
    )


def usage_attributes(usage: Usage) -> dict[str, Any]:
    """`gen_ai.usage.*` attributes (plus `loom.usage.cost_usd`) for the non-zero fields.

    `gen_ai.usage.input_tokens` counts every prompt token, cached or not, as the conventions
    ask (`Usage.prompt_tokens`); the cache attributes say which part of it was read from or
    written to the cache. (`Usage.input_tokens` is the uncached part, as Claude reports it.)"""
    pairs = (
        ("output_tokens", GEN_AI_USAGE_OUTPUT_TOKENS),
        ("cache_read_tokens", GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
        ("cache_write_tokens", GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
        ("cost_usd", LOOM_COST_USD),
    )
    raw = usage.to_dict()
    attributes = {name: raw[key] for key, name in pairs if key in raw}
    if usage.prompt_tokens:
        attributes[GEN_AI_USAGE_INPUT_TOKENS] = usage.prompt_tokens
    return attributes


def tool_attributes(
    *, tool: str, call_id: str | None = None, tool_type: str = "function"
) -> dict[str, Any]:
    """Attributes of an `execute_tool {tool}` span (`tool_type`: function, extension or
    datastore, as the conventions name them)."""
    return _without_none(
        {
            GEN_AI_OPERATION_NAME: OP_EXECUTE_TOOL,
            GEN_AI_TOOL_NAME: tool,
            GEN_AI_TOOL_CALL_ID: call_id,
            GEN_AI_TOOL_TYPE: tool_type,
        }
    )


def chat_input_attributes(messages: Iterable[Message], system: str | None) -> dict[str, Any]:
    """The content of a chat request (`gen_ai.input.messages`, `gen_ai.system_instructions`):
    set only by callers that capture content."""
    return _without_none(
        {
            GEN_AI_INPUT_MESSAGES: messages_json(messages),
            GEN_AI_SYSTEM_INSTRUCTIONS: system_instructions_json(system) if system else None,
        }
    )


def chat_output_attributes(message: Message, finish_reason: str) -> dict[str, Any]:
    """The content of a chat response (`gen_ai.output.messages`, with its finish reason)."""
    (out,) = json.loads(messages_json([message]))
    out["finish_reason"] = finish_reason
    return {GEN_AI_OUTPUT_MESSAGES: json.dumps([out], ensure_ascii=False, default=str)}


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """Set several attributes on a span (the Span protocol has only `set_attribute`)."""
    for key, value in attributes.items():
        span.set_attribute(key, value)


# --------------------------------------------------------------------------- content


def messages_json(messages: Iterable[Message]) -> str:
    """Messages as the JSON string `gen_ai.input.messages` / `output.messages` expect.

    Each message becomes `{"role", "parts": [...]}` with text, tool_call and
    tool_call_response parts. The system prompt goes separately, in
    `gen_ai.system_instructions` (see `system_instructions_json`).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        if message["role"] == "tool":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": message.get("tool_call_id"),
                    "response": message["content"],
                }
            )
        elif message["content"]:
            parts.append({"type": "text", "content": message["content"]})
        for call in message.get("tool_calls", ()):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call["id"],
                    "name": call["tool"],
                    "arguments": call["args"],
                }
            )
        out.append({"role": message["role"], "parts": parts})
    return json.dumps(out, ensure_ascii=False, default=str)


def system_instructions_json(system: str) -> str:
    """The system prompt as the JSON string `gen_ai.system_instructions` expects."""
    return json.dumps([{"type": "text", "content": system}], ensure_ascii=False)


def span_trace(span: Span | None) -> str | None:
    """The W3C traceparent of a span that can say it (`LinkableSpan`), else None."""
    return span.trace_parent() if isinstance(span, LinkableSpan) else None


def link_span(span: Span | None, trace: str | None, kind: LinkKind) -> None:
    """Link `span` to the span `trace` names (nothing when either cannot link)."""
    if trace and isinstance(span, LinkableSpan):
        span.link_to(trace, {LOOM_LINK_KIND: kind.value})

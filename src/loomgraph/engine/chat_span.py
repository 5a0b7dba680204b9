"""A model call's span attributes (OpenTelemetry GenAI conventions): what it was asked, then
what it answered or, failed or cut off, what it was charged; prompts and answers only when the
telemetry captures content."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loomgraph.protocols import Model, ModelRequest, ModelResponse, Usage, semconv


def asked(
    model: Model, request: ModelRequest, session_id: str | None, capture: bool
) -> dict[str, Any]:
    """The attributes a chat span starts with."""
    # The limit the adapter sends: the request's own, else the model's.
    limit = request.max_tokens or getattr(model, "max_tokens", None)
    chat = semconv.chat_attributes(
        model=model.name,
        provider=semconv.provider_of(model),
        max_tokens=limit if isinstance(limit, int) else None,
        session_id=session_id,
    )
    if capture:
        chat |= semconv.chat_input_attributes(request.messages, request.system)
    return chat


def answered(
    response: ModelResponse, spent: Usage, usage_chunk: Mapping[str, Any], capture: bool
) -> dict[str, Any]:
    """The attributes a chat span that answered ends with: what its attempt was charged
    (`spent`: the answer as priced, and the model's own retries in it), its counts even when
    zero (they were reported); `usage_chunk` names the answer's id and model when the
    provider said them."""
    done = {
        semconv.GEN_AI_USAGE_INPUT_TOKENS: spent.input_tokens,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: spent.output_tokens,
        **semconv.usage_attributes(spent),
        **semconv.response_attributes(
            finish_reasons=[response.finish_reason],
            response_model=usage_chunk.get("response_model"),
            response_id=usage_chunk.get("response_id"),
        ),
    }
    if capture:
        done |= semconv.chat_output_attributes(response.to_message(), response.finish_reason)
    return done


def charged(spent: Usage) -> dict[str, Any]:
    """The usage attributes of a chat span whose attempt failed or was cut off: what it was
    charged (`spent`), the counts that are not zero (none: nothing was billed)."""
    return semconv.usage_attributes(spent)

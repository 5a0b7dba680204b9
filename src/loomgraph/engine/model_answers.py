"""What a model call sent back, checked, and what a call is charged: its worst case before,
its reported usage after, and an estimate when it failed or was cut off."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from loomgraph.protocols import (
    FinishReason,
    ModelError,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
    check_tool_args,
)
from loomgraph.protocols.usage import estimate_output_tokens, estimate_prompt_tokens, floor_usage


def model_estimate(request: ModelRequest) -> Usage:
    """The worst case of a model call: the prompt's size (≈4 characters a token) + max_tokens."""
    return Usage(
        input_tokens=request.prompt_chars() // 4 + 1,
        output_tokens=request.max_tokens or 4096,
        model_calls=1,
    )


def broken_usage(request: ModelRequest, usage: Usage, streamed: list[str]) -> Usage:
    """A failed call's usage, at least what it streamed (for models that report too little)."""
    if not streamed:
        return usage  # nothing came back: the model's own account (e.g. a 400) stands
    return floor_usage(
        usage,
        prompt_tokens=estimate_prompt_tokens(request.prompt_chars()),
        output_tokens=streamed_tokens(request, streamed),
    )


def reported_usage(value: Any, request: ModelRequest, streamed: list[str]) -> Usage:
    """The usage a model reported (a Usage or its dict), without tool calls (not the model's
    to count); ModelError when it is impossible (a negative, NaN or fractional count), which
    charges the call its estimate instead."""
    try:
        usage = Usage.reported(value)
    except ValueError as err:
        raise ModelError(
            f"the model reported an impossible usage: {err}",
            usage=cancelled_usage(request, streamed),
        ) from None
    return replace(usage, tool_calls=0) if usage.tool_calls else usage


def checked_call(
    call: Any, request: ModelRequest, streamed: list[str], earlier: Sequence[ToolCall] = ()
) -> ToolCall:
    """A tool call a model sent, when it is one: an id and a tool name (text), the id not one
    of the `earlier` calls' of the same turn (each result goes back matched to its call by
    id; the Messages API refuses a repeated one), and arguments within the limits (any
    model's: the provider adapters check theirs as they parse them, another model could hand
    over a 2,000-deep object no later step can walk). Else a ModelError, and the call is
    charged its estimate."""
    try:
        if not isinstance(call, dict):
            raise ValueError(f"a tool call is a mapping, not {type(call).__name__}")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not isinstance(call.get("tool"), str):
            raise ValueError("a tool call needs an `id` and a `tool` name, both text")
        if any(other["id"] == call_id for other in earlier):
            raise ValueError(f"the id {call_id!r} repeats an earlier call's in the same turn")
        check_tool_args(call.get("args"))
    except ValueError as err:  # ToolArgsRejected included
        raise ModelError(
            f"the model sent an unusable tool call: {err}",
            usage=cancelled_usage(request, streamed),
        ) from None
    return cast(ToolCall, call)


def unreported_usage(request: ModelRequest, streamed: list[str], answer: ModelResponse) -> Usage:
    """A completed answer's usage with each count the model did not report raised to its
    estimate, field by field: the prompt's size when no prompt tokens were reported, what it
    streamed (its tool calls' arguments included) when no output tokens were, as a cut
    stream is floored. A count that was reported stands: it is the provider's own, and the
    estimate (4 characters a token) is no tokenizer. When anything was raised, `cost_usd` is
    cleared, to be priced again from the tokens."""
    usage = answer.usage
    if usage.prompt_tokens and usage.output_tokens:
        return usage  # both reported (the common case): nothing to estimate, the prompt unread
    output = 0
    if not usage.output_tokens and (streamed or answer.tool_calls):
        said = [*streamed, *(json.dumps(call.get("args")) for call in answer.tool_calls)]
        output = streamed_tokens(request, said)
    # The prompt is measured (a walk over the whole conversation) only when no prompt
    # tokens were reported: a reported count stands (floor_usage).
    prompt = 0 if usage.prompt_tokens else estimate_prompt_tokens(request.prompt_chars())
    return floor_usage(usage, prompt_tokens=prompt, output_tokens=output)


def cancelled_usage(request: ModelRequest, streamed: list[str]) -> Usage:
    """A call stopped from outside (cancelled) was sent: its prompt and what it streamed."""
    return Usage(
        input_tokens=estimate_prompt_tokens(request.prompt_chars()),
        output_tokens=streamed_tokens(request, streamed),
        model_calls=1,
    )


def streamed_tokens(request: ModelRequest, streamed: list[str]) -> int:
    """The output estimate of what was streamed, at most the max_tokens the model was sent."""
    tokens = estimate_output_tokens("".join(streamed), len(streamed))
    return min(tokens, request.max_tokens) if request.max_tokens else tokens


def response_data(response: ModelResponse) -> dict[str, Any]:
    """A model's answer as its effect's outcome keeps it."""
    return {
        "text": response.text,
        "tool_calls": response.tool_calls,
        "usage": response.usage.to_dict(),
        "finish_reason": response.finish_reason,
    }


def response_from(data: Mapping[str, Any]) -> ModelResponse:
    """A model's answer back from its effect's outcome (a replay)."""
    return ModelResponse(
        text=data.get("text", ""),
        tool_calls=list(data.get("tool_calls", [])),
        usage=Usage.from_dict(data.get("usage", {}), trusted=True),
        finish_reason=FinishReason.of(data.get("finish_reason", FinishReason.END_TURN)),
    )

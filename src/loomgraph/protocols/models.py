"""Models: the streamed chunks of a turn, the request, the assembled response, the error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.messages import Message, ToolCall, ToolSpec
from loomgraph.protocols.usage import Usage

__all__ = [
    "FinishReason",
    "Model",
    "ModelAnswerIncomplete",
    "ModelAnswerTruncated",
    "ModelChunk",
    "ModelError",
    "ModelRefused",
    "ModelRequest",
    "ModelResponse",
    "Sampling",
]


class FinishReason(StrEnum):
    """Why a model ended its turn: the Messages API's stop reasons, onto which the adapters
    map their provider's (`length` is `MAX_TOKENS`, `content_filter` is `REFUSAL`). A member
    equals its text, so a model may yield either."""

    END_TURN = "end_turn"  # a whole answer
    TOOL_USE = "tool_use"  # it called tools
    MAX_TOKENS = "max_tokens"  # cut off by max_tokens (or a full context window)
    STOP_SEQUENCE = "stop_sequence"  # one of the request's stop sequences
    REFUSAL = "refusal"  # it declined, or the provider's content filter stopped it
    PAUSE_TURN = "pause_turn"  # a long server-side tool turn paused (Anthropic)

    @classmethod
    def of(cls, reason: str) -> FinishReason | str:
        """The member a model's reason names (OpenAI's spellings too); an unknown reason as
        it was given."""
        return _SPELLINGS.get(reason, reason)


# Every spelling a model may give of a member: its own, and OpenAI's and Anthropic's others.
_SPELLINGS: dict[str, FinishReason] = {
    **{member.value: member for member in FinishReason},
    "stop": FinishReason.END_TURN,
    "tool_calls": FinishReason.TOOL_USE,
    "function_call": FinishReason.TOOL_USE,
    "length": FinishReason.MAX_TOKENS,
    "model_context_window_exceeded": FinishReason.MAX_TOKENS,
    "content_filter": FinishReason.REFUSAL,
}
# The reasons of a turn that may be no whole answer, by every spelling: one lookup a turn.
_CUT_SHORT: dict[str, FinishReason] = {
    spelling: member
    for spelling, member in _SPELLINGS.items()
    if member in (FinishReason.MAX_TOKENS, FinishReason.REFUSAL)
}


class ModelChunk(TypedDict, total=False):
    """One streamed piece of a model turn.

    `type` is `text` (with `text`), `tool_call` (with a complete `call`), `usage` (with
    `usage`, a `Usage`: the provider's account of the answer, so also, when it named them, the
    answer's `response_id` and the `response_model` that wrote it, for telemetry), `finish`
    (with `finish_reason`) or `attempt`: an attempt that failed before it streamed anything
    and is retried by the model itself (with its number `attempt`, its `error` and the `usage`
    it billed, which the final `usage` does not repeat).
    """

    type: Literal["text", "tool_call", "usage", "finish", "attempt"]
    text: str
    call: ToolCall
    usage: Usage
    response_id: str
    response_model: str
    finish_reason: FinishReason | str
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """The common sampling settings of a model call; None (or no stop sequences) leaves the
    provider's default. `top_k` is Anthropic's, `seed` the OpenAI API's: the other ignores it."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(slots=True)
class ModelRequest:
    """Everything a model needs for one turn."""

    messages: Sequence[Message]
    system: str = ""
    tools: Sequence[ToolSpec] = ()
    max_tokens: int | None = None
    tool_choice: str | None = None  # a tool name the model must call, or None for auto
    # Sampling: None (or no stop sequences) leaves the model's own setting in force.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: Sequence[str] = ()
    seed: int | None = None
    # Which run asks, and how many model calls the run made before this one (replayed ones
    # included), so a scripted model can answer per run without shared state.
    run_id: str = ""
    call_index: int = 0

    def prompt_chars(self) -> int:
        """How many characters the request sends: system, messages, tool calls, tool specs."""
        total = len(self.system)
        for message in self.messages:
            total += len(message.get("content") or "")
            for call in message.get("tool_calls") or ():
                total += len(call.get("tool", "")) + len(json.dumps(call.get("args") or {}))
        if self.tools:
            total += len(json.dumps(list(self.tools)))
        return total

    def sampling(self, defaults: Sampling = Sampling()) -> Sampling:
        """The settings this call samples with: the request's own, else the model's defaults."""
        return Sampling(
            temperature=_first(self.temperature, defaults.temperature),
            top_p=_first(self.top_p, defaults.top_p),
            top_k=_first(self.top_k, defaults.top_k),
            stop_sequences=tuple(self.stop_sequences) or defaults.stop_sequences,
            seed=_first(self.seed, defaults.seed),
        )


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


@dataclass(slots=True)
class ModelResponse:
    """A finished model turn, assembled from its chunks. `finish_reason` is a `FinishReason`,
    or the text of one (a member equals its text); a reason loomgraph does not know stays
    as the model gave it."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason | str = FinishReason.END_TURN

    def whole_answer(
        self, request: ModelRequest | None = None, model: Model | None = None
    ) -> ModelResponse:
        """This turn, when it is a whole answer. `ModelRefused` when the model refused (or a
        content filter stopped it); `ModelAnswerTruncated` when max_tokens cut it off before
        it called a tool (each tool call a model hands out is whole, and its result lets the
        model go on). `request` and `model` name the limit in force."""
        stop = _CUT_SHORT.get(self.finish_reason)
        if stop is None:  # (the common case: one lookup)
            return self
        name = "" if model is None else model.name
        if stop is FinishReason.REFUSAL:
            raise ModelRefused(self, name)
        if self.tool_calls:
            return self
        limit = None if request is None else request.max_tokens
        if limit is None and model is not None:
            limit = getattr(model, "max_tokens", None)
        raise ModelAnswerTruncated(self, name, limit if isinstance(limit, int) else None)

    def to_message(self) -> Message:
        """The assistant message this turn adds to the conversation."""
        message: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


class ModelError(LoomgraphError):
    """A model call failed. Adapters raise subclasses naming the status and request id.

    `retry_step` is true when the whole step may be tried again (a stream that broke after
    it started); `usage` is what the provider already billed for the failed attempt.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_step: bool = False,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.retry_step = retry_step
        # Why an impossible usage an adapter gave was set aside ("" when none was).
        self.usage_problem = ""
        self.usage = usage or Usage()

    @property
    def usage(self) -> Usage:
        """What the provider billed for the failed attempt (checked: see `Usage.reported`)."""
        return self._usage

    @usage.setter
    def usage(self, value: Any) -> None:
        # Set by adapters (a dict from a third-party one): an impossible usage would crash
        # the accounting of a call that happened, so it counts as none reported, and the
        # call is charged its estimate instead (see engine.context).
        try:
            self._usage = Usage.reported(value)
        except ValueError as err:
            self._usage, self.usage_problem = Usage(), str(err)


@runtime_checkable
class Model(Protocol):
    """A chat model that streams its turn as chunks.

    Models have no `close()`: a model holds no resource loomgraph opened (adapters own
    their SDK clients, which close themselves when collected).
    """

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream one turn."""
        ...


class ModelAnswerIncomplete(ModelError):
    """A model turn that is no whole answer, though the call succeeded (and was charged):
    refused, or cut off by max_tokens. `finish_reason` as the model gave it, what it said
    (`text`) and the call's `usage` (counted by the engine already, as any answered call's:
    a node that catches this and goes on reports it in its patch, as it would the answer's).
    Never retried by the model or the engine: the same request would end the same way; a
    node's `retry` policy may still try again."""

    def __init__(self, message: str, response: ModelResponse, model: str = "") -> None:
        super().__init__(message, usage=response.usage)
        self.finish_reason = response.finish_reason
        self.text = response.text
        self.model = model


class ModelAnswerTruncated(ModelAnswerIncomplete):
    """max_tokens cut the model's answer off before it finished (`FinishReason.MAX_TOKENS`,
    OpenAI's `length`); `max_tokens` is the limit in force, when known."""

    def __init__(
        self, response: ModelResponse, model: str = "", max_tokens: int | None = None
    ) -> None:
        limit = "" if max_tokens is None else f" ({max_tokens})"
        super().__init__(
            f"{_whose(model)} answer was cut off at max_tokens{limit} after "
            f"{response.usage.output_tokens} output tokens, before it finished (finish reason "
            f"{str(response.finish_reason)!r}): raise `max_tokens` on the node (`max_tokens:` "
            "in the graph file) or on the model (`max_tokens=`; a budget that caps output "
            "tokens lowers it to what is left), or ask for a shorter answer",
            response,
            model,
        )
        self.max_tokens = max_tokens


class ModelRefused(ModelAnswerIncomplete):
    """The model refused to answer, or the provider's content filter stopped its answer
    (`FinishReason.REFUSAL`, OpenAI's `content_filter`); `text` is what it said, if anything."""

    # How much of what it said the message quotes (all of it is `text`).
    QUOTED = 200

    def __init__(self, response: ModelResponse, model: str = "") -> None:
        said = response.text.strip()
        quote = said[: self.QUOTED] + ("…" if len(said) > self.QUOTED else "")
        super().__init__(
            f"{_whose(model)} turn is a refusal, not an answer (finish reason "
            f"{str(response.finish_reason)!r}: the model declined, or the provider's content "
            f"filter stopped it)" + (f"; it said: {quote!r}" if said else ""),
            response,
            model,
        )


def _whose(model: str) -> str:
    """How a message begins: naming the model when its name is known."""
    return f"model {model!r}: the" if model else "the model's"

"""Models: the streamed chunks of a turn, the request, the assembled response, the error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.messages import Message, ToolCall, ToolSpec
from loomgraph.protocols.usage import Usage

__all__ = ["Model", "ModelChunk", "ModelError", "ModelRequest", "ModelResponse", "Sampling"]


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
    finish_reason: str
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
    """A finished model turn, assembled from its chunks."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "end_turn"

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

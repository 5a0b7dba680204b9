"""`ScriptedModel`: a zero-key model that plays a script of turns, one copy per run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import ModelChunk, ModelRequest, ToolCall, Usage

_DEFAULT_USAGE = Usage(input_tokens=10, output_tokens=5)


@dataclass(slots=True)
class Turn:
    """One scripted model turn: text, tool calls and the usage to report."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: _DEFAULT_USAGE)
    finish_reason: str | None = None


# A turn may also be an exception (instance or class): the model raises it, as a provider would.
TurnLike = Turn | str | dict[str, Any] | BaseException | type[BaseException]


class ScriptExhausted(LoomgraphError, RuntimeError):
    """A run asked the scripted model for more turns than its script has."""


def as_turn(value: Turn | str | dict[str, Any], index: int = 0) -> Turn:
    """A Turn from a Turn, a string (text only) or a dict with text/tool_calls/usage."""
    if isinstance(value, Turn):
        return value
    if isinstance(value, str):
        return Turn(text=value)
    calls = [
        ToolCall(
            id=c.get("id") or f"call_{index}_{i}", tool=c["tool"], args=dict(c.get("args", {}))
        )
        for i, c in enumerate(value.get("tool_calls", []))
    ]
    raw = value.get("usage")
    usage = raw if isinstance(raw, Usage) else Usage.from_dict(raw) if raw else _DEFAULT_USAGE
    return Turn(value.get("text", ""), calls, usage, value.get("finish_reason"))


class ScriptedModel:
    """Plays `turns` in order; each run has its own position, so concurrent runs never share.

    The position is the run's model-call count (`request.call_index`), which a resumed run
    restores from its journal, so a resumed run gets the same turns as an uninterrupted one.
    `turns` may also be a function of the request that returns a turn.
    """

    def __init__(
        self,
        turns: Sequence[TurnLike] | Callable[[ModelRequest], TurnLike],
        *,
        name: str = "scripted",
        chunk_size: int = 0,
    ) -> None:
        self.name = name
        self._script = (
            turns
            if callable(turns)
            else [
                t if isinstance(t, BaseException | type) else as_turn(t, i)
                for i, t in enumerate(turns)
            ]
        )
        self._chunk_size = chunk_size  # >0: split text into chunks of this many characters

    def turn_for(self, request: ModelRequest) -> Turn:
        """The turn a request gets (raising it, when the script says the provider fails)."""
        if isinstance(self._script, list):
            if request.call_index >= len(self._script):
                raise ScriptExhausted(
                    f"script of {len(self._script)} turn(s) exhausted at "
                    f"model call {request.call_index + 1} of run "
                    f"{request.run_id}"
                )
            turn: TurnLike = self._script[request.call_index]
        else:
            turn = self._script(request)
        if isinstance(turn, BaseException) or (
            isinstance(turn, type) and issubclass(turn, BaseException)
        ):
            raise turn
        return as_turn(turn, request.call_index)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the turn: text chunks, tool calls, usage, finish."""
        turn = self.turn_for(request)
        size = self._chunk_size or len(turn.text) or 1
        for start in range(0, len(turn.text), size):
            yield {"type": "text", "text": turn.text[start : start + size]}
        for call in turn.tool_calls:
            yield {"type": "tool_call", "call": call}
        yield {"type": "usage", "usage": turn.usage}
        reason = turn.finish_reason or ("tool_use" if turn.tool_calls else "end_turn")
        yield {"type": "finish", "finish_reason": reason}

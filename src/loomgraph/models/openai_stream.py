"""Reading a streamed chat completion: its chunks, one at a time, into loomgraph's.

Text deltas are handed out as they arrive; tool calls are assembled from their `index`-keyed
argument fragments (or, from a server that sends no index, by id and function name) and
handed out only once the choice has a `finish_reason`. Usage is read as loomgraph means it: cached
prompt tokens apart from the rest. A chunk that is not shaped as the API documents it, or
out of place, raises `MalformedChunk` (`HTTPModel._read` makes it a `ModelBadResponse`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from loomgraph.models import _shape as shape
from loomgraph.models._adapter import StreamTally
from loomgraph.models._shape import CallCutOff, MalformedChunk
from loomgraph.protocols import FinishReason, ModelChunk, ToolCall, Usage
from loomgraph.protocols.tool_args import ToolArgLimits, parse_tool_args

__all__ = ["ChatCompletion", "chat_usage"]


class ChatCompletion:
    """The state of one streamed chat completion (its first choice): tool-call fragments,
    usage so far, finish reason."""

    end_marker = "a finish_reason"

    def __init__(self, tally: StreamTally, limits: ToolArgLimits) -> None:
        self.tally = tally
        self.limits = limits
        # Fragments by (0, index); a server that sends no index (Gemini's endpoint, Ollama,
        # proxies) gets (1, n): see `_fragment` for when such a fragment starts call n.
        self.slots: dict[tuple[int, int], dict[str, Any]] = {}
        self.unindexed = 0
        self.usage = Usage()
        self.finish: str | None = None
        self.called = False
        self.refused = False
        # The completion's id and the model that wrote it (for telemetry): every chunk names
        # them, the first one that does is kept.
        self.response_id: str | None = None
        self.response_model: str | None = None

    def feed(self, chunk: Any) -> Iterator[ModelChunk]:
        """The chunks one chat.completion.chunk produces. A chunk of the wrong shape raises
        MalformedChunk (or the TypeError/AttributeError reading it does); tool arguments
        that are not a JSON object within the limits raise ValueError (`HTTPModel._read`)."""
        if self.response_id is None:
            self.response_id = shape.label(shape.get(chunk, "id"))
        if self.response_model is None:
            self.response_model = shape.label(shape.get(chunk, "model"))
        usage = shape.get(chunk, "usage")
        if usage is not None:
            self.usage = chat_usage(usage)
        choices = shape.get(chunk, "choices")
        if choices is None:
            return
        if not isinstance(choices, list | tuple):
            raise MalformedChunk(f"choices is a {type(choices).__name__}, not a list")
        for choice in choices:
            shape.obj(choice, "a choice")
            at = shape.get(choice, "index")
            # n > 1 is never requested: the first choice is the answer (one sent without an
            # index can only be that one).
            if at is None or shape.index(at, "choice.index") == 0:
                yield from self._choice(choice)

    def ended(self) -> bool:
        """Whether the choice has finished."""
        return self.finish is not None

    def reported(self) -> Usage:
        """The usage the server reported so far (each report is its whole account)."""
        return self.usage

    def finish_reason(self) -> FinishReason | str:
        """loomgraph's finish reason for the finished choice: `tool_use` when it made tool
        calls, whatever the server said (some local servers say "stop" after them); `refusal`
        when it streamed a refusal (OpenAI says "stop" after one)."""
        finish = self.finish or "stop"
        if self.called:
            return FinishReason.TOOL_USE
        return FinishReason.REFUSAL if self.refused else FinishReason.of(finish)

    def _choice(self, choice: Any) -> Iterator[ModelChunk]:
        delta = shape.get(choice, "delta")
        if delta is not None:
            shape.obj(delta, "choice.delta")
            piece = shape.text(shape.get(delta, "content"), "delta.content")
            if piece:
                self._not_finished("text (delta.content)")
                self.tally.add(piece)
                yield ModelChunk(type="text", text=piece)
            # A refusal comes apart from the answer, with finish_reason "stop": its text is
            # what the model said (as Claude's refusal text is), and the turn a refusal.
            refusal = shape.text(shape.get(delta, "refusal"), "delta.refusal")
            if refusal:
                self._not_finished("a refusal (delta.refusal)")
                self.refused = True
                self.tally.add(refusal)
                yield ModelChunk(type="text", text=refusal)
            # Reasoning is not the answer, but it is output the provider bills: counted for a
            # server that reports no usage (vLLM's and DeepSeek's `reasoning_content`,
            # Ollama's and OpenRouter's `reasoning`).
            for field in ("reasoning_content", "reasoning"):
                thought = shape.get(delta, field)
                if isinstance(thought, str):  # (not the documented API: other shapes pass)
                    self.tally.add(thought, shown=False)
            parts = shape.get(delta, "tool_calls")
            if parts is not None:
                if not isinstance(parts, list | tuple):
                    raise MalformedChunk(
                        f"delta.tool_calls is a {type(parts).__name__}, not a list"
                    )
                for part in parts:
                    self._fragment(part)
        reason = shape.text(shape.get(choice, "finish_reason"), "choice.finish_reason")
        if reason:
            self.finish = reason
            # Only a finished choice has complete tool calls.
            cut = FinishReason.of(reason) is FinishReason.MAX_TOKENS
            calls = [_assemble(self.slots[key], self.limits, cut) for key in sorted(self.slots)]
            self.slots.clear()
            for call in calls:
                self.called = True
                yield ModelChunk(type="tool_call", call=call)

    def _not_finished(self, what: str) -> None:
        if self.finish is not None:
            # The finish_reason said the answer was complete (its calls were handed out, the
            # engine takes the text so far as the whole); more of it now would be dropped,
            # run after the fact, or tacked onto an answer already judged complete.
            raise MalformedChunk(f"{what} arrived after the finish_reason")

    def _fragment(self, part: Any) -> None:
        shape.obj(part, "a delta.tool_calls entry")
        self._not_finished("a tool-call fragment")
        call_id = shape.text(shape.get(part, "id"), "tool call id")
        name = arguments = ""
        function = shape.get(part, "function")
        if function is not None:
            shape.obj(function, "tool call function")
            name = shape.text(shape.get(function, "name"), "function.name")
            arguments = shape.text(shape.get(function, "arguments"), "function.arguments")
        at = shape.get(part, "index")
        if at is not None:
            key = (0, shape.index(at, "tool call index"))
        else:
            current = self.slots.get((1, self.unindexed))
            if current is None or _starts_call(current, call_id, name, self.limits):
                if not (call_id or name or arguments):
                    return  # nothing of a call (metadata only)
                self.unindexed += 1
            key = (1, self.unindexed)
        slot = self.slots.setdefault(key, {"id": "", "name": "", "parts": []})
        slot["id"] = call_id or slot["id"]
        slot["name"] = name or slot["name"]
        if arguments:
            slot["parts"].append(arguments)
            self.tally.add(arguments)


def _starts_call(current: dict[str, Any], call_id: str, name: str, limits: ToolArgLimits) -> bool:
    """Whether a fragment with no index starts a call after `current`, rather than adding to
    its arguments: it has an id other than the current call's, or it names a function while
    the current call has its name and either another one or arguments already complete (a
    continuing fragment carries arguments only; some servers send each call whole, without an
    id, one fragment each, and may call one function twice)."""
    if call_id and current["id"]:
        return bool(call_id != current["id"])
    if not (name and current["name"]):
        return False
    return name != current["name"] or _complete("".join(current["parts"]), limits)


def _complete(arguments: str, limits: ToolArgLimits) -> bool:
    """Whether `arguments` are a whole arguments object (read within the limits: a server's
    text, however deep); empty ones may still be the start of some."""
    if not arguments.strip():
        return False
    try:
        parse_tool_args(arguments, limits)
    except ValueError:
        return False
    return True


def _assemble(slot: dict[str, Any], limits: ToolArgLimits, cut: bool) -> ToolCall:
    """The call a finished choice's fragments add up to; CallCutOff when its arguments do
    not parse in an answer stopped by its max_tokens (`cut`): they are incomplete."""
    if not slot["name"]:
        raise MalformedChunk(f"tool call {slot['id'] or '(no id)'} has no function name")
    try:
        args = parse_tool_args("".join(slot["parts"]), limits)
    except ValueError as exc:
        if cut:
            raise CallCutOff(slot["name"], slot["id"]) from exc
        raise
    return {"id": slot["id"] or f"call_{uuid.uuid4().hex[:12]}", "tool": slot["name"], "args": args}


def chat_usage(raw: Any) -> Usage:
    """A chat completion's `usage` as loomgraph's: `prompt_tokens` less the cached part is
    `input_tokens`, the cached part `cache_read_tokens` (Anthropic's meaning, so both
    adapters' usage means the same). A count left out is 0, the engine's to estimate. More
    cached tokens than prompt tokens is MalformedChunk: no count of the two can be trusted."""
    shape.obj(raw, "usage")
    prompt = shape.count(shape.get(raw, "prompt_tokens"), "usage.prompt_tokens")
    output = shape.count(shape.get(raw, "completion_tokens"), "usage.completion_tokens") or 0
    cached = 0
    details = shape.get(raw, "prompt_tokens_details")
    if details is not None:
        shape.obj(details, "usage.prompt_tokens_details")
        where = "usage.prompt_tokens_details.cached_tokens"
        cached = shape.count(shape.get(details, "cached_tokens"), where) or 0
    if prompt is not None and cached > prompt:
        # The cached tokens are part of prompt_tokens: a clamp to 0 would charge a guess.
        raise MalformedChunk(
            f"impossible usage: usage.prompt_tokens_details.cached_tokens is {cached}, more "
            f"than usage.prompt_tokens ({prompt}) of which it is a part"
        )
    return Usage(
        input_tokens=prompt - cached if prompt is not None else 0,
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_tokens=0,
    )

"""`ScriptedModel`: a zero-key model that plays a script of turns, one copy per run."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.models.errors import ScriptTurnInvalid
from loomgraph.protocols import FinishReason, ModelChunk, ModelRequest, ToolCall, Usage

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
    """A run asked the scripted model for more turns than its script has: the model's own
    failure, so the call is charged, journaled failed and counted like any failed call."""


_TURN_KEYS = ("text", "tool_calls", "usage", "finish_reason")
_CALL_KEYS = ("id", "tool", "args")


def as_turn(value: object, index: int = 0) -> Turn:
    """A Turn from a Turn, a string (text only) or a dict with text/tool_calls/usage/
    finish_reason; `ScriptTurnInvalid`, naming turn `index`, for anything else."""
    if isinstance(value, Turn):
        return value
    if isinstance(value, str):
        return Turn(text=value)
    if not isinstance(value, Mapping):
        raise ScriptTurnInvalid(
            f"scripted turn {index} is {_kind(value)}; a turn is a string, a dict, a Turn "
            "or an exception to raise",
            index=index,
        )
    # A misspelt key would otherwise be an empty turn, and a test pass for the wrong reason.
    _check_keys(value, _TURN_KEYS, index, "")
    text = value.get("text", "")
    if not isinstance(text, str):
        raise _wrong(index, "", "text", text, "a string")
    raw_calls = value.get("tool_calls", ())
    if not isinstance(raw_calls, list | tuple):
        raise _wrong(index, "", "tool_calls", raw_calls, "a list of tool calls")
    calls = [_tool_call(call, index, i) for i, call in enumerate(raw_calls)]
    _check_ids(calls, index)
    reason = value.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise _wrong(index, "", "finish_reason", reason, "a string or None")
    if reason is not None:
        _check_reason(reason, index)
    return Turn(text, calls, _usage(value.get("usage"), index), reason)


def _check_reason(reason: str, index: int) -> None:
    """Refuse a finish reason no model gives (a typo of `max_tokens` would play an ordinary
    answer, not a cut-off one); a provider's spelling (`length`, `stop`) is one. A `Turn`
    plays any reason, unchecked, to test an unknown one."""
    if isinstance(FinishReason.of(reason), FinishReason):
        return
    known = [member.value for member in FinishReason]
    near = difflib.get_close_matches(reason, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ScriptTurnInvalid(
        f"scripted turn {index}: 'finish_reason' is {reason!r}{hint}, not one a model gives: "
        f"{', '.join(known)} (or a provider's spelling of one; Turn(...) plays any)",
        index=index,
        key="finish_reason",
        allowed=_TURN_KEYS,
    )


def _check_ids(calls: list[ToolCall], index: int) -> None:
    """Refuse two calls of one turn with one id: their results could not be told apart."""
    seen: set[str] = set()
    for call in calls:
        if call["id"] in seen:
            raise ScriptTurnInvalid(
                f"scripted turn {index}: tool call id {call['id']!r} twice; each call of a "
                "turn needs its own id",
                index=index,
                key="tool_calls",
                allowed=_TURN_KEYS,
            )
        seen.add(call["id"])


def _tool_call(call: object, index: int, position: int) -> ToolCall:
    """One scripted tool call: a dict with `tool`, and optionally `id` and `args`."""
    where = f"tool call {position} "
    if not isinstance(call, Mapping):
        raise ScriptTurnInvalid(
            f"scripted turn {index}: {where}is {_kind(call)}, not a dict with "
            f"{', '.join(_CALL_KEYS)}",
            index=index,
            key="tool_calls",
            allowed=_TURN_KEYS,
        )
    _check_keys(call, _CALL_KEYS, index, where, required="tool")
    tool, call_id, args = call["tool"], call.get("id"), call.get("args", {})
    if not isinstance(tool, str):
        raise _wrong(index, where, "tool", tool, "a tool's name (a string)")
    if not tool.strip():
        raise ScriptTurnInvalid(
            f"scripted turn {index}: {where}'tool' is empty; it names the tool called",
            index=index,
            key="tool",
            allowed=_CALL_KEYS,
        )
    if call_id is not None and not isinstance(call_id, str):
        raise _wrong(index, where, "id", call_id, "a string or None")
    if not isinstance(args, Mapping):
        raise _wrong(index, where, "args", args, "a dict of arguments")
    return ToolCall(id=call_id or f"call_{index}_{position}", tool=tool, args=dict(args))


def _usage(raw: object, index: int) -> Usage:
    """The usage a turn reports: a Usage as given, a dict checked, none for the default."""
    if isinstance(raw, Usage):
        return raw  # taken as given, so a test can script an impossible one
    if not raw:
        return _DEFAULT_USAGE
    if not isinstance(raw, Mapping):
        raise _wrong(index, "", "usage", raw, "a dict or a Usage")
    try:
        return Usage.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise ScriptTurnInvalid(
            f"scripted turn {index}: 'usage': {exc}", index=index, key="usage", allowed=_TURN_KEYS
        ) from exc


def _check_keys(
    value: Mapping[Any, Any],
    allowed: tuple[str, ...],
    index: int,
    where: str,
    required: str | None = None,
) -> None:
    """Refuse keys outside `allowed`, and a missing `required` one, naming them."""
    unknown = [key for key in value if key not in allowed]
    missing = required is not None and required not in value
    if not unknown and not missing:
        return
    problems: list[str] = []
    if unknown:
        shown = ", ".join(repr(key) for key in unknown)
        problems.append(f"unknown keys {shown}" if len(unknown) > 1 else f"an unknown key {shown}")
        near = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
        if near and near[0] not in value:
            problems[-1] += f" (did you mean {near[0]!r}?)"
    if missing:
        problems.append(f"no {required!r}")
    subject = f"scripted turn {index}: {where}" if where else f"scripted turn {index} "
    whole = "a tool call" if where else "a turn dict"
    raise ScriptTurnInvalid(
        f"{subject}has {' and '.join(problems)}; {whole} has {', '.join(allowed)}",
        index=index,
        key=str(unknown[0]) if unknown else required,
        allowed=allowed,
    )


def _wrong(index: int, where: str, key: str, value: object, wanted: str) -> ScriptTurnInvalid:
    """The error for a turn's (or its tool call's) `key` holding a value of the wrong type."""
    allowed = _CALL_KEYS if where else _TURN_KEYS
    return ScriptTurnInvalid(
        f"scripted turn {index}: {where}{key!r} is {_kind(value)}, not {wanted}",
        index=index,
        key=key,
        allowed=allowed,
    )


def _kind(value: object) -> str:
    """How an error names what it was given: a class by name, else the value's type."""
    return f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__


def _raises(value: object) -> bool:
    """Whether a turn is an exception (instance or class) the model raises."""
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


class ScriptedModel:
    """Plays `turns` in order; each run has its own position, so concurrent runs never share.

    The position is the run's model-call count (`request.call_index`), which a resumed run
    restores from its journal, so a resumed run gets the same turns as an uninterrupted one.
    `turns` may also be a function of the request that returns a turn, or an async one
    (`stream` awaits its turn).
    """

    def __init__(
        self,
        turns: Sequence[TurnLike] | Callable[[ModelRequest], TurnLike | Awaitable[TurnLike]],
        *,
        name: str = "scripted",
        chunk_size: int = 0,
    ) -> None:
        self.name = name
        if isinstance(turns, str | bytes | dict):
            # A string is a sequence too: it would play one turn per character.
            raise ScriptTurnInvalid(
                f"ScriptedModel takes a list of turns (or a function), not one "
                f"{type(turns).__name__}: write ScriptedModel([{turns!r:.60}])"
            )
        self._script = (
            turns
            if callable(turns)
            else [t if _raises(t) else as_turn(t, i) for i, t in enumerate(turns)]
        )
        self._chunk_size = chunk_size  # >0: split text into chunks of this many characters

    def turn_for(self, request: ModelRequest) -> Turn:
        """The turn a request gets (raising it, when the script says the provider fails).
        Sync: an async script function's turn is played by `stream`, which awaits it."""
        turn = self._scripted(request)
        if inspect.isawaitable(turn):
            if inspect.iscoroutine(turn):
                turn.close()  # never to be awaited: no "never awaited" warning on top
            raise ScriptTurnInvalid(
                f"scripted turn {request.call_index} comes from an async script function; "
                "turn_for cannot await it (stream() does)",
                index=request.call_index,
            )
        return _played(turn, request.call_index)

    def _scripted(self, request: ModelRequest) -> object:
        """The script's turn for `request` as written: a list's item, or what the function
        returned (an awaitable, from an async one)."""
        if not isinstance(self._script, list):
            return self._script(request)
        if request.call_index >= len(self._script):
            raise ScriptExhausted(
                f"script of {len(self._script)} turn(s) exhausted at "
                f"model call {request.call_index + 1} of run "
                f"{request.run_id}"
            )
        return self._script[request.call_index]

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the turn: text chunks, tool calls, usage, finish. An async script
        function's turn is awaited first, as loomgraph awaits async tools and nodes."""
        scripted = self._scripted(request)
        if inspect.isawaitable(scripted):
            scripted = await scripted
        turn = _played(scripted, request.call_index)
        size = self._chunk_size or len(turn.text) or 1
        for start in range(0, len(turn.text), size):
            yield {"type": "text", "text": turn.text[start : start + size]}
        for call in turn.tool_calls:
            yield {"type": "tool_call", "call": call}
        yield {"type": "usage", "usage": _billed(turn.usage, request.max_tokens)}
        reason = turn.finish_reason or ("tool_use" if turn.tool_calls else "end_turn")
        yield {"type": "finish", "finish_reason": reason}


def _billed(usage: Usage, max_tokens: int | None) -> Usage:
    """The usage a turn reports: as the script gave it, or the default with its output
    tokens no more than the call's `max_tokens`, as a provider bills (a budget that fitted
    the call to its cap would otherwise see the fake spend past it)."""
    if usage is not _DEFAULT_USAGE or max_tokens is None or max_tokens >= usage.output_tokens:
        return usage
    return replace(usage, output_tokens=max(max_tokens, 0))


def _played(turn: object, index: int) -> Turn:
    """The Turn a scripted value plays, raising it when it is an exception. A script
    function's turn is read here, so its error names the call it answered."""
    if _raises(turn):
        raise turn  # type: ignore[misc]
    return as_turn(turn, index)

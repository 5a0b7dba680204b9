"""Auto-extraction: a model turns a finished episode into facts, in the background.

`extract_facts` makes one model call that must call the `record_facts` tool (JSON text is
accepted too, for models without tool use). `Extractor` runs that as asyncio tasks that
never raise into the caller: failures go to `on_error` (or the log), `drain()` waits for
pending work, and `cancel(user_id, session_id, before)` drops the pending work a memory's
`forget` covers (it calls it); facts are written only while their episode is stored.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from loomgraph.errors import LoomgraphError
from loomgraph.memory.records import Fact, prepare_facts, user_key
from loomgraph.protocols import Episode, Message, Model, ModelRequest, ToolCall, ToolSpec

log = logging.getLogger("loomgraph.memory")

RECORD_FACTS = "record_facts"
FACTS_TOOL: ToolSpec = {
    "name": RECORD_FACTS,
    "description": "Record the lasting facts this conversation revealed about the user.",
    "parameters": {
        "type": "object",
        "properties": {
            "facts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "subject": {
                            "type": "string",
                            "description": "'user', or who/what it is about",
                        },
                        "predicate": {
                            "type": "string",
                            "description": "the relation, e.g. 'lives in'",
                        },
                        "object": {"type": "string", "description": "the value, e.g. 'Lisbon'"},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["subject", "predicate", "object"],
                },
            }
        },
        "required": ["facts"],
    },
}
SYSTEM = (
    "You maintain a long-term memory about a user. From the conversation below, extract "
    "facts that will still be true and useful in later conversations: who the user is, "
    "their preferences, plans, relationships, and decisions. Use subject 'user' for the "
    "user. Skip small talk, the assistant's own statements and anything only relevant to "
    f"this one exchange. Call {RECORD_FACTS} once, with an empty list if there is nothing."
)
_EXCERPT = 6000  # characters of prompt and of answer sent to the extracting model
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class ExtractionError(LoomgraphError, ValueError):
    """The model's answer held no usable list of facts."""


def _transcript(episode: Episode) -> str:
    tools = f"\n(Tools used: {', '.join(episode.tool_calls)})" if episode.tool_calls else ""
    return f"User: {episode.prompt[:_EXCERPT]}\n\nAssistant: {episode.output[:_EXCERPT]}{tools}"


def _json_in(text: str) -> Any:
    """The JSON value in a text answer: the whole text, a fenced block, or the outer brackets."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = text.rfind("}" if text[start] == "{" else "]")
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ExtractionError(f"no {RECORD_FACTS} call and no JSON in the answer: {text[:200]!r}")


def parse_facts(payload: Any, episode: Episode, max_facts: int = 20) -> list[Fact]:
    """Facts from `{"facts": [...]}` or `[...]`; malformed items are skipped, not guessed at.

    Each item is checked on its own, by the rule `add_facts` applies (`prepare_facts`): one
    that memory would refuse — a field empty or over 1,000 characters, a NaN confidence —
    is skipped, so it cannot fail the others. A confidence outside 0-1 is taken as the
    nearer bound, one that is no number as 1."""
    items = payload.get("facts") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ExtractionError(f"expected a list of facts, got {type(items).__name__}")
    facts = []
    for item in items:
        fact = _fact(item, episode)
        if fact is not None:
            facts.append(fact)
            if len(facts) == max_facts:
                break
    if items and not facts:
        raise ExtractionError(
            f"none of the {len(items)} facts had a subject, predicate and object memory can "
            "keep (each non-empty, at most 1,000 characters) and a confidence"
        )
    return facts


def _fact(item: Any, episode: Episode) -> Fact | None:
    """One extracted item as a Fact memory will store, or None when it is malformed."""
    if not isinstance(item, dict):
        return None
    parts = [item.get(k) for k in ("subject", "predicate", "object")]
    if not all(isinstance(p, str) and p.strip() for p in parts):
        return None
    raw = item.get("confidence", 1.0)
    confidence = 1.0
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        # Compared before any float(): an int of 400 digits has no float.
        confidence = 1.0 if raw > 1 else 0.0 if raw < 0 else float(raw)
    fact = Fact(
        str(parts[0]),
        str(parts[1]),
        str(parts[2]),
        confidence,
        episode.run_id,
        user_id=episode.user_id,
        session_id=episode.session_id,
    )
    try:
        prepare_facts(episode.user_id, [fact], 0.0)
    except (ValueError, TypeError) as err:
        log.debug("extracted item skipped for run %s: %s", episode.run_id, err)
        return None
    return fact


async def extract_facts(
    model: Model, episode: Episode, *, max_facts: int = 20, max_tokens: int = 1024
) -> list[Fact]:
    """Ask `model` for the facts in `episode` (forcing the `record_facts` tool)."""
    messages: list[Message] = [{"role": "user", "content": _transcript(episode)}]
    request = ModelRequest(
        messages=messages,
        system=SYSTEM,
        tools=[FACTS_TOOL],
        tool_choice=RECORD_FACTS,
        max_tokens=max_tokens,
        run_id=f"extract-{episode.run_id}",
    )
    text: list[str] = []
    calls: list[ToolCall] = []
    async for chunk in model.stream(request):
        if chunk.get("type") == "text":
            text.append(chunk.get("text", ""))
        elif chunk.get("type") == "tool_call" and "call" in chunk:
            calls.append(chunk["call"])
    call = next((c for c in calls if c.get("tool") == RECORD_FACTS), None)
    payload = call.get("args") if call is not None else _json_in("".join(text))
    return parse_facts(payload, episode, max_facts)


class FactStore(Protocol):
    """What extraction writes to (every MemoryStore is one)."""

    async def add_facts(
        self, user_id: str | None, facts: list[Fact], *, source_episode: str | None = None
    ) -> list[Fact]:
        """Record facts in one transaction; none while episode `source_episode` is not
        stored (checked in that transaction)."""
        ...


OnError = Callable[[Episode, BaseException], Awaitable[None] | None]
OnFacts = Callable[[Episode, list[Fact]], Awaitable[None] | None]


class Extractor:
    """Runs fact extraction as background tasks; nothing it does raises into the caller."""

    def __init__(
        self,
        *,
        on_error: OnError | None = None,
        on_facts: OnFacts | None = None,
        max_facts: int = 20,
    ) -> None:
        self.on_error = on_error
        self.on_facts = on_facts
        self.max_facts = max_facts
        self._tasks: dict[asyncio.Task[None], Episode] = {}  # task → the episode it mines

    @property
    def pending(self) -> int:
        """How many extractions have not finished."""
        return len(self._tasks)

    def schedule(self, memory: FactStore, model: Model, episode: Episode) -> asyncio.Task[None]:
        """Start extracting `episode` into `memory` and return at once (call inside a loop)."""
        register = getattr(memory, "add_forget_hook", None)
        if callable(register):
            register(self.cancel)  # so forget() cancels before it deletes
        task = asyncio.get_running_loop().create_task(
            self._run(memory, model, episode), name=f"loomgraph-extract-{episode.run_id}"
        )
        self._tasks[task] = episode
        task.add_done_callback(lambda t: self._tasks.pop(t, None))
        return task

    async def drain(self) -> None:
        """Wait until every scheduled extraction has finished (or was cancelled)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(
        self, user_id: str | None, session_id: str | None = None, before: float | None = None
    ) -> int:
        """Cancel the user's pending extractions — of episodes of `session_id` and older than
        `before`, when given: what a `forget` with those filters deletes — and wait for them
        to stop; how many."""
        key = user_key(user_id)

        def covered(ep: Episode) -> bool:
            return (
                user_key(ep.user_id) == key
                and (session_id is None or ep.session_id == session_id)
                and (before is None or ep.at < before)
            )

        mine = [t for t, ep in self._tasks.items() if covered(ep)]
        for task in mine:
            task.cancel()
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)
        return len(mine)

    async def _run(self, memory: FactStore, model: Model, episode: Episode) -> None:
        try:
            facts = await extract_facts(model, episode, max_facts=self.max_facts)
            stored = (
                await memory.add_facts(episode.user_id, facts, source_episode=episode.run_id)
                if facts
                else []
            )
        except Exception as err:  # CancelledError is not an Exception: cancel() still works
            await self._callback(self.on_error, episode, err)
            return
        await self._callback(self.on_facts, episode, stored)

    async def _callback(
        self, callback: Callable[..., Any] | None, episode: Episode, value: Any
    ) -> None:
        if callback is None:
            if isinstance(value, BaseException):
                log.warning(
                    "fact extraction for run %s failed: %s: %s",
                    episode.run_id,
                    type(value).__name__,
                    value,
                )
            return
        try:
            result = callback(episode, value)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A broken reporter must not turn into an unhandled task exception.
            log.exception("memory extraction callback failed for run %s", episode.run_id)

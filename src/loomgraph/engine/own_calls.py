"""A node's own calls (`NodeContext.call_own`): what acts for them, and the key each is
journaled and asked about under.

A tool call's arguments come from the model's answer, which a resume replays from the
journal: the call a resume makes is the one asked about. A node builds its own call from
what it reads now (reflexion's lessons write merges the run's lessons into the memory block
as it stands), so a resume may build another: another run of the user kept a lesson while
this one waited for its approval. That call was never asked about, and the approval given
for the first would write a text that drops the other run's lesson: it is asked about anew,
under the next key of its name (`NAME~2`, ...), and the first approval is used by none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loomgraph.engine.approval_checks import same_call
from loomgraph.engine.effects import EffectKey, ran_call
from loomgraph.engine.scope import RunScope
from loomgraph.protocols import ToolCall, ToolResult, ToolSpec

__all__ = ["OwnTool", "own_call_key", "own_key", "own_keys_begun"]


@dataclass(frozen=True, slots=True)
class OwnTool:
    """A call a node makes itself (a write of its own, not a tool of the host's): the spec it
    is decided against and what acts, given the call as approved (its arguments maybe
    edited by an approver)."""

    spec: ToolSpec
    act: Callable[[ToolCall], Awaitable[ToolResult]]


async def own_call_key(
    scope: RunScope, call: ToolCall, key: EffectKey
) -> tuple[EffectKey, ToolCall]:
    """The key `call` is journaled under and the call made there: `key` — or, while a
    request journaled before the run stopped asked about another call there that never
    began, the next of its name. A call begun under a key is the one made there, as it was
    journaled (replayed, or made again after a crash, as approved), whatever the node built
    now."""
    found, n = key, 1
    while True:
        if found.text in scope.begun:
            began = await scope.deps.runtime.effect(scope.run_id, found.text)
            return found, call if began is None else ran_call(began, call)
        request_key = found.approval_request_of(call["id"])
        if str(request_key) not in scope.requested:
            return found, call
        request = await scope.finished_effect(request_key) or {}
        if "call" not in request or same_call(request["call"], call):
            return found, call
        n += 1
        found = own_key(key, n)


def own_key(key: EffectKey, n: int) -> EffectKey:
    """The `n`th key of a node's own call named by `key` (the first is `key` itself)."""
    return key if n == 1 else EffectKey(key.run_id, key.path, key.visit, f"{key.slot}~{n}")


def own_keys_begun(scope: RunScope, key: EffectKey) -> list[str]:
    """The keys of the node's own call named by `key` that the run began (the journal
    knows them; `RunScope.begun`)."""
    prefix = key.text + "~"
    return [k for k in scope.begun if k == key.text or k.startswith(prefix)]

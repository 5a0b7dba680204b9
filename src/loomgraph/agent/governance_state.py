"""What a run keeps of its governance: the permission policy it is pinned to, when it is
resumed the approval requests and untrusted tool results journaled before it stopped, and
for a fork every untrusted text its parent had up to the fork point."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loomgraph.agent.checkpoints import ResumeError, is_top_level
from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import UntrustedText, note_messages, note_result
from loomgraph.protocols import (
    Deps,
    EffectRecord,
    EffectStatus,
    RunRecord,
    Runtime,
    ToolHost,
    Transition,
)
from loomgraph.runtime.errors import JournalCorrupted


class PolicyChanged(ResumeError):
    """A run is resumed under another permission policy than the one it is pinned to."""

    def __init__(self, run_id: str, pinned: str, current: str) -> None:
        super().__init__(
            f"run {run_id} is pinned to permission policy {pinned}; this agent's policy is "
            f"{current}. Resume with the same permissions, or pass override_policy=True "
            "(the override is audited)"
        )
        self.run_id = run_id
        self.pinned = pinned
        self.current = current


def describe_policy(deps: Deps) -> dict[str, Any]:
    """The policy as the journal pins it: its fingerprint and, when it can say, its rules."""
    if deps.pinnable is not None:
        return {"fingerprint": deps.pinnable.fingerprint(), "policy": deps.pinnable.to_data()}
    kind = type(deps.permissions)
    # A policy that cannot describe itself is pinned by its class: a resume under another
    # class is refused; one under a differently configured object of the class is not seen.
    return {"fingerprint": f"class:{kind.__module__}.{kind.__qualname__}", "policy": None}


def check_policy(record: RunRecord, deps: Deps, *, override: bool) -> dict[str, Any] | None:
    """Refuse to resume a run under another policy than its pinned one, unless `override`;
    the pinned and current fingerprints when they differ (and the override was given)."""
    pinned = record.initial.policy if record.initial is not None else None
    if pinned is None:  # journaled before runs were pinned
        return None
    current = describe_policy(deps)["fingerprint"]
    if pinned["fingerprint"] == current:
        return None
    if not override:
        raise PolicyChanged(record.run_id, pinned["fingerprint"], current)
    return {"pinned": pinned["fingerprint"], "current": current}


async def restore(scope: RunScope, runtime: Runtime, tools: ToolHost) -> None:
    """Give a resumed run what it knew of approvals and untrusted text before it stopped."""
    requested = []
    for effect in await runtime.effects(scope.run_id):
        if isinstance(effect.intent.get("call"), dict):  # a call (a tool's, the lessons')
            scope.begun.add(effect.key)  # run, or maybe run (unknown after a crash)
        if effect.status != EffectStatus.DONE:
            continue
        if effect.kind == "approval_request":
            requested.append(effect.key)
        else:
            _note_effect(scope.untrusted, effect, tools)
    scope.requested = frozenset(requested)


async def untrusted_until(
    runtime: Runtime,
    tools: ToolHost,
    record: RunRecord,
    transitions: Sequence[Transition],
    at: int,
    messages: Iterable[Any],
) -> tuple[str, ...]:
    """Every untrusted text run `record` had at its checkpoint `at`, for a fork of it to keep
    with its start (`RunStart.untrusted`): what the run started with (its history, what its
    system prompt recalled: a fork's parent's text too) and its tools' untrusted results, but
    those of node visits journaled after `at`; less the text a fork counts anyway, from the
    `messages` it starts with (kept once, not twice)."""
    texts = _Texts()
    note_messages(texts, tools, messages)
    texts.kept.clear()  # counted from the fork's own first state: only marked as seen
    if record.initial is not None:
        note_messages(texts, tools, record.initial.state.get("messages") or ())
        for text in record.initial.untrusted:
            texts.add(text)
    later = _after(record.run_id, transitions, at)
    for effect in await runtime.effects(record.run_id):
        if effect.status == EffectStatus.DONE and not later(effect.key):
            _note_effect(texts, effect, tools)
    return tuple(texts.kept)


def _note_effect(untrusted: UntrustedText, effect: EffectRecord, tools: ToolHost) -> None:
    """Count a finished tool call's result as untrusted text, unless its tool is trusted. A
    `tool` effect is the tool gate's, whose intent is the call: one whose intent names no
    tool (another effect's row, its kind damaged) is `JournalCorrupted`, found before a
    fork or a resume goes on from it."""
    if effect.kind == "tool" and effect.outcome is not None:
        call = effect.intent.get("call")
        if not isinstance(call, dict) or not isinstance(call.get("tool"), str):
            raise JournalCorrupted(
                f"of run {effect.run_id}",
                f"effect {effect.key}: a tool call's effect whose intent names no tool call "
                f"(it holds {sorted(effect.intent)!r:.80})",
            )
        spec = tools.spec(call["tool"])
        note_result(untrusted, spec, str(effect.outcome.get("content", "")))


def _after(run_id: str, transitions: Sequence[Transition], at: int) -> Callable[[str], bool]:
    """Whether an effect's key is of a node visit of the run's own graph journaled after
    checkpoint `at` (its own effects, `node:visit:`, and its child graphs', `node.visit/`).
    Keys of visits never journaled (under way when the run stopped) are not: more taint is
    safe, less is not. So is a key that might be a visit's at or before `at` too (a node
    name may hold `:` or `.`, so two prefixes can match one key)."""
    after: list[str] = []
    upto: list[str] = []
    for t in transitions:
        if is_top_level(t):
            (after if t.seq > at else upto).extend(
                (f"{run_id}:{t.node}:{t.visit}:", f"{run_id}:{t.node}.{t.visit}/")
            )
    later, kept = tuple(after), tuple(upto)  # str.startswith of a tuple: one C-level call
    return lambda key: key.startswith(later) and not key.startswith(kept)


class _Texts(UntrustedText):
    """The untrusted texts themselves, each once and in the order seen, where a run's
    `UntrustedText` cuts them into pieces: what a fork's start keeps in the journal."""

    __slots__ = ("_seen", "kept")

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[str] = []
        self._seen: set[str] = set()

    def add(self, content: str) -> None:
        """Keep one untrusted text, unless it was seen already."""
        if content not in self._seen:
            self._seen.add(content)
            self.kept.append(content)

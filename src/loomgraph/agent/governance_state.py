"""What a run keeps of its governance: the permission policy, budget caps and audit log it is
pinned to, when it is resumed the approval requests and untrusted tool results journaled
before it stopped, and for a fork every untrusted text its parent had up to the fork point."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from loomgraph.agent.checkpoints import ResumeError, is_top_level
from loomgraph.engine.effects import APPROVAL_REQUEST_KIND
from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import UntrustedText, note_messages, note_result
from loomgraph.governance.caps import CAP_NAMES, Caps
from loomgraph.protocols import (
    AuditLog,
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


# What else a run is pinned to, besides its permission policy, when it has it: a run
# started without caps or without an audit log is pinned to neither (nor is one journaled
# before they were pinned), and goes on under whatever the resuming Agent has.
Governed = Literal["budget", "audit_log"]
GOVERNED: Final[tuple[Governed, ...]] = ("budget", "audit_log")


class GovernanceChanged(ResumeError):
    """A run is resumed by an Agent without the budget caps or the audit log it is pinned
    to: `changed` holds, for each (`budget`, `audit_log`), what the run started under and
    what this Agent has (None: none)."""

    def __init__(self, run_id: str, changed: Mapping[Governed, tuple[Any, Any]]) -> None:
        pinned, current = both_said(changed)
        super().__init__(
            f"run {run_id} is pinned to {pinned}; this agent has {current}. Resume with the "
            "same budget and audit log, or pass override_policy=True (the override is audited)"
        )
        self.run_id = run_id
        self.changed = dict(changed)


def describe_policy(deps: Deps) -> dict[str, Any]:
    """The governance the journal pins a run to: the policy's fingerprint and, when it can say,
    its rules; with them the budget's caps (`budget`) and the audit log (`audit_log`) when
    the run has them."""
    pinned = _policy(deps)
    for part, described in _governance(deps).items():
        if described is not None:
            pinned[part] = described
    return pinned


def describe_budget(deps: Deps) -> dict[str, Any] | None:
    """The budget a run is pinned to: the fingerprint of its caps (global, per user, for
    named users), the caps and the ledger keeping what was spent (`describe_ledger`); a
    budget of another kind, whose caps cannot be read, by its class; None without a budget
    or with one that caps nothing."""
    if not deps.budgeted:
        return None
    config = getattr(deps.budget, "config", None)
    if not isinstance(config, Caps):
        return {"fingerprint": f"class:{_qualname(type(deps.budget))}", "caps": None}
    given = getattr(config, "users", None) or {}
    users = {str(user): _caps(own) for user, own in given.items()}
    caps = {
        "caps": _caps(config),
        "per_user": _caps(getattr(config, "per_user", None)),
        "users": users,
    }
    if not any((caps["caps"], caps["per_user"], *users.values())):
        return None  # caps nothing: as no budget
    text = json.dumps(caps, sort_keys=True, separators=(",", ":"))
    fingerprint = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    described = {"fingerprint": fingerprint, "caps": caps}
    if (ledger := describe_ledger(getattr(deps.budget, "ledger", None))) is not None:
        described["ledger"] = ledger
    return described


def describe_ledger(ledger: object) -> dict[str, str] | None:
    """The ledger a run's budget keeps its spending in: its class and where it keeps it
    (`Ledger.kept_at`: a file's real path, a Postgres database and schema); None for one
    that does not say (an in-memory ledger is one process's)."""
    where = getattr(ledger, "kept_at", None)
    if not isinstance(where, str):
        return None
    return {"ledger": _qualname(type(ledger)), "at": where}


def describe_audit_log(log: AuditLog) -> dict[str, Any] | None:
    """The audit log a run is pinned to: its class and, when it says, where it writes (a
    file's absolute path, a database's location without its password: what identifies it
    then); None when it records nothing."""
    # `AuditMode.of`'s rule, read here without it: the run reads its mode once, at its start.
    if getattr(log, "enabled", True) is False:
        return None
    described: dict[str, Any] = {"log": _qualname(type(log))}
    location = getattr(log, "location", None)
    path = getattr(log, "path", None)
    if isinstance(location, str):
        described["at"] = location
    elif isinstance(path, str | Path):
        # Absolute: `./audit.jsonl` resumed from another folder is another file.
        described["at"] = str(Path(path).resolve())
    return described


def check_policy(record: RunRecord, deps: Deps, *, override: bool) -> dict[str, Any] | None:
    """Refuse to resume a run under another policy than its pinned one, unless `override`;
    the pinned and current fingerprints when they differ (and the override was given)."""
    pinned = record.initial.policy if record.initial is not None else None
    if pinned is None:  # journaled before runs were pinned
        return None
    current = _policy(deps)["fingerprint"]
    if pinned["fingerprint"] == current:
        return None
    if not override:
        raise PolicyChanged(record.run_id, pinned["fingerprint"], current)
    return {"pinned": pinned["fingerprint"], "current": current}


def check_governance(record: RunRecord, deps: Deps, *, override: bool) -> dict[str, Any] | None:
    """Refuse to resume a run under another policy (`PolicyChanged`), or without the budget
    caps or audit log it is pinned to (`GovernanceChanged`), unless `override`; what
    changed when something did (and the override was given): the policy's `pinned` and
    `current` fingerprints, and `budget` and `audit_log` each as `{pinned, current}`."""
    changed = check_policy(record, deps, override=override) or {}
    pinned = record.initial.policy if record.initial is not None else None
    current = _governance(deps)
    moved: dict[Governed, tuple[Any, Any]] = {
        part: (pinned[part], current[part])
        for part in GOVERNED
        if pinned is not None and part in pinned and not _same(part, pinned[part], current[part])
    }
    if moved and not override:
        raise GovernanceChanged(record.run_id, moved)
    for part, (was, now) in moved.items():
        changed[part] = {"pinned": said_of(part, was), "current": said_of(part, now)}
    return changed or None


def _policy(deps: Deps) -> dict[str, Any]:
    """The permission policy's fingerprint and, when it can say, its rules."""
    if deps.pinnable is not None:
        return {"fingerprint": deps.pinnable.fingerprint(), "policy": deps.pinnable.to_data()}
    kind = type(deps.permissions)
    # A policy that cannot describe itself is pinned by its class: a resume under another
    # class is refused; one under a differently configured object of the class is not seen.
    return {"fingerprint": f"class:{_qualname(kind)}", "policy": None}


def _governance(deps: Deps) -> dict[Governed, dict[str, Any] | None]:
    return {"budget": describe_budget(deps), "audit_log": describe_audit_log(deps.audit_log)}


def _same(part: Governed, pinned: Any, current: dict[str, Any] | None) -> bool:
    """Whether the run's pinned `part` is the Agent's: a budget by its caps' fingerprint and
    where its ledger keeps the spending (when the run was pinned to a ledger that said), an
    audit log by where it writes, or by its class when it does not say."""
    if current is None or not isinstance(pinned, dict):
        return False
    if part == "budget":
        ledger = pinned.get("ledger")
        now = current.get("ledger") or {}
        same_ledger = not isinstance(ledger, dict) or ledger.get("at") == now.get("at")
        return bool(pinned.get("fingerprint") == current["fingerprint"] and same_ledger)
    if "at" in pinned:  # where entries land, whatever object writes them there
        return bool(pinned["at"] == current.get("at"))
    return bool(pinned.get("log") == current["log"])


def both_said(changed: Mapping[Governed, tuple[Any, Any]]) -> tuple[str, str]:
    """What a run is pinned to and what an Agent has instead (`GovernanceChanged.changed`),
    as a message names them."""
    pinned = " and ".join(said_of(part, was) for part, (was, _) in changed.items())
    return pinned, " and ".join(said_of(part, now) for part, (_, now) in changed.items())


def said_of(part: Governed, described: Any) -> str:
    """A pinned or current budget or audit log (`describe_budget`, `describe_audit_log`), as
    a message names it."""
    if part == "budget":
        if not isinstance(described, dict):
            return "no budget"
        caps = described.get("caps")
        what = f" ({_caps_said(caps)})" if isinstance(caps, dict) else ""
        ledger = described.get("ledger")
        if isinstance(ledger, dict):
            what += f" in ledger {ledger.get('ledger')} at {ledger.get('at')}"
        return f"budget caps {described.get('fingerprint')}{what}"
    if not isinstance(described, dict):
        return "no audit log"
    at = described.get("at")
    return f"audit log {described.get('log')}" + (f" at {at}" if at else "")


def _caps_said(caps: dict[str, Any]) -> str:
    """Pinned caps as a person reads them: `model_calls=1 per user, tool_calls=9 for bob`."""
    scopes = [("", caps.get("caps")), (" per user", caps.get("per_user"))]
    scopes += [(f" for {user}", own) for user, own in (caps.get("users") or {}).items()]
    said = [
        f"{name}={value}{whose}"
        for whose, own in scopes
        if isinstance(own, dict)
        for name, value in own.items()
    ]
    return ", ".join(said) or "none"


def _caps(caps: Caps | None) -> dict[str, Any] | None:
    if caps is None:
        return None
    return {name: value for name in CAP_NAMES if (value := getattr(caps, name)) is not None}


def _qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


async def restore(scope: RunScope, runtime: Runtime, tools: ToolHost) -> None:
    """Give a resumed run what it knew of approvals and untrusted text before it stopped."""
    requested = []
    for effect in await runtime.effects(scope.run_id):
        if isinstance(effect.intent.get("call"), dict):  # a call (a tool's, the lessons')
            scope.begun.add(effect.key)  # run, or maybe run (unknown after a crash)
        if effect.status != EffectStatus.DONE:
            continue
        if effect.kind == APPROVAL_REQUEST_KIND:
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
    """Count a finished tool call's result as untrusted text, unless its tool is trusted."""
    if effect.kind == "tool" and effect.outcome is not None:
        spec = tools.spec(_tool_call_of(effect)["tool"])
        note_result(untrusted, spec, str(effect.outcome.get("content", "")))


def _tool_call_of(effect: EffectRecord) -> dict[str, Any]:
    """A `tool` effect's call: the tool gate journals the call as its intent. One whose
    intent names no tool (another effect's row, its kind damaged) is `JournalCorrupted`."""
    call = effect.intent.get("call")
    if not isinstance(call, dict) or not isinstance(call.get("tool"), str):
        raise JournalCorrupted(
            f"of run {effect.run_id}",
            f"effect {effect.key}: a tool call's effect whose intent names no tool call "
            f"(it holds {sorted(effect.intent)!r:.80})",
        )
    return call


async def check_effect_rows(runtime: Runtime, run_id: str) -> None:
    """`JournalCorrupted` for a finished effect row the run's gates could not have written,
    read before a resume writes anything (an answer, a recovery) that would otherwise be
    spent on a run that cannot go on."""
    for effect in await runtime.effects(run_id):
        if effect.kind == "tool" and effect.status == EffectStatus.DONE:
            _tool_call_of(effect)


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

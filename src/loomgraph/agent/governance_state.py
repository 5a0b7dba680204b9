"""What a run keeps of its governance: the permission policy it is pinned to, and — when it
is resumed — the approval requests and untrusted tool results journaled before it stopped."""

from __future__ import annotations

from typing import Any

from loomgraph.agent.checkpoints import ResumeError
from loomgraph.engine.scope import RunScope
from loomgraph.engine.taint import note_result
from loomgraph.protocols import Deps, EffectStatus, RunRecord, Runtime, ToolHost


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
        if effect.status != EffectStatus.DONE:
            continue
        if effect.kind == "approval_request":
            requested.append(effect.key)
        elif effect.kind == "tool" and effect.outcome is not None:
            spec = tools.spec(effect.intent["call"]["tool"])
            note_result(scope.untrusted, spec, str(effect.outcome.get("content", "")))
    scope.requested = frozenset(requested)

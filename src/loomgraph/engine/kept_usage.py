"""What a run was charged that no journaled transition carries yet: the model calls of a
node visit that failed, was retried or stopped, and the calls that gave up.

A node's calls reach the run's usage through its patch (`usage`): its transition journals
it and the state adds it up. A visit that fails throws its patch away, and with it what its
answered calls used, though the ledger charged them. So when a visit attempt fails (retried,
routed by `on_error`, or ending the run) or stops the run, the usage of the calls it
answered is read back from their journaled outcomes and kept on the run's scope
(`RunScope.failed_usage`) by call key, as a call that gave up keeps its own: a key is kept
once, however often it is read. A visit whose transition is then journaled carries what is
kept of it (and, routed by `on_error`, what its child graphs used) in its patch, and the
keys are dropped; a call made again or replayed drops its key too (its answer counts it
from then on); the run's result adds what is left. Nothing of this runs while no visit
fails: a run's steps only test whether anything is kept.

A call cut off by a time limit (its node's `timeout`, the run's deadline) is charged and kept
by its key as it is cancelled, like a call that gave up; its attempt is journaled when the
interpreter keeps the visit that failed or stopped (`keep_cut_off`), so a resume that makes
the call again counts it through its journaled attempt, once.

The engine counts every call it made, once, by key: a node that catches a call's error and
reports the usage the error carried in its own patch is not counted twice for it
(`reported_again`).
"""

from __future__ import annotations

from typing import Any

from loomgraph.engine.attempts import Handed, answered_calls
from loomgraph.engine.context import VisitContext
from loomgraph.engine.scope import RunScope
from loomgraph.protocols import Usage
from loomgraph.protocols.paths import NodePath
from loomgraph.protocols.usage import USAGE_FIELDS

# What a visit carries nothing of: no keys to drop.
NOTHING_CARRIED: tuple[str, ...] = ()


async def keep_visit_calls(ctx: VisitContext) -> None:
    """Keep what the model calls this visit answered used, from their journaled outcomes:
    the visit failed, is retried or stopped the run, so no patch of it carries them. With
    them, the calls a time limit cut off in it or in a child graph it ran."""
    scope = ctx.scope
    if scope.cut_off:
        await keep_cut_off(scope, _prefixes(scope, ctx))
    ctx.models.handed = None  # (a retry's patch reports only what its own calls got back)
    path = ctx.key_path + ctx.node
    scope.failed_usage.update(await answered_calls(scope, path, ctx.visit, ctx.numbered_effects))


async def keep_cut_off(scope: RunScope, under: tuple[str, str]) -> None:
    """Journal the attempts of the calls a cancellation cut off in a visit that ended (keys
    starting with `under`: the visit's own, its child graphs'), and keep what their visits'
    earlier calls answered: a child graph's visit cut off with its parent is not kept by the
    interpreter (it was cancelled, not failed). Another visit's are left to it: it may go on."""
    for key in [k for k in scope.cut_off if k.startswith(under)]:
        call = scope.cut_off.pop(key)
        scope.failed_usage[key] = await call.keep()
        k = call.key
        scope.failed_usage.update(await answered_calls(scope, k.path, k.visit, int(k.slot) - 1))


def _prefixes(scope: RunScope, ctx: VisitContext) -> tuple[str, str]:
    """How the keys of a visit's own effects begin, and those of its child graphs'."""
    own = f"{scope.run_id}:{ctx.key_path}{ctx.node}:{ctx.visit}:"
    below = f"{scope.run_id}:{ctx.key_path}{ctx.node}.{ctx.visit}{NodePath.SEPARATOR}"
    return own, below


def carry_kept(
    scope: RunScope, ctx: VisitContext, patch: dict[str, Any], *, children: bool = False
) -> tuple[str, ...]:
    """Add to the visit's patch what is kept of the visit and of the child graphs it ran
    (with `children`, also their usage so far: the visit failed and was routed, so its patch
    does not carry them); the keys to drop once its transition is journaled. What the node
    reported itself of its calls that did not answer is not added again (`Handed`)."""
    under = _prefixes(scope, ctx)
    keys = tuple(k for k in scope.failed_usage if k.startswith(under))
    extra = sum((scope.failed_usage[k] for k in keys), Usage())
    path = ctx.qualified_node + NodePath.SEPARATOR
    if children:  # (dropped by the transition's journaling, as a node's own children are)
        extra += sum((u for p, u in scope.child_usage.items() if p.startswith(path)), Usage())
    elif ctx.models.handed is not None:  # the node got errors back, and completed all the same
        ran = sum((u for p, u in scope.child_usage.items() if p.startswith(path)), Usage())
        extra = _less(extra, reported_again(ctx.models.handed, patch, ran))
    if extra:
        patch["usage"] = (Usage.from_dict(patch.get("usage") or {}) + extra).to_dict()
    return keys


def reported_again(handed: Handed, patch: dict[str, Any], children: Usage) -> Usage:
    """What a node reported in its patch's `usage` of the errors its calls gave it back:
    what it reports beyond its answers and its child graphs' usage, up to what the errors
    carried (the engine counted that already, by call key)."""
    reported = Usage.from_dict(patch.get("usage") or {})
    answers = sum(handed.answered.values(), Usage())
    beyond = _less(reported, answers + children)
    return Usage(*(min(getattr(beyond, n), getattr(handed.unanswered, n)) for n in USAGE_FIELDS))


def _less(usage: Usage, taken: Usage) -> Usage:
    """`usage` less `taken`, field by field, never below zero."""
    return Usage(*(max(getattr(usage, n) - getattr(taken, n), 0) for n in USAGE_FIELDS))


def drop_carried(scope: RunScope, keys: tuple[str, ...]) -> None:
    """Forget what a journaled transition carries now (a call cut off in a visit that went on
    included: its transition counts it, it is not journaled again)."""
    for key in keys:
        scope.failed_usage.pop(key, None)
        scope.cut_off.pop(key, None)

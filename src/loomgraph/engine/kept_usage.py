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
"""

from __future__ import annotations

from typing import Any

from loomgraph.engine.context import MODEL_EFFECT, VisitContext
from loomgraph.engine.scope import RunScope
from loomgraph.protocols import EffectStatus, Usage
from loomgraph.protocols.paths import NodePath

# What a visit carries nothing of: no keys to drop.
NOTHING_CARRIED: tuple[str, ...] = ()


async def keep_visit_calls(ctx: VisitContext) -> None:
    """Keep what the model calls this visit answered used, from their journaled outcomes:
    the visit failed, is retried or stopped the run, so no patch of it carries them."""
    scope = ctx.scope
    runtime, run_id = scope.deps.runtime, scope.run_id
    for slot in range(1, ctx.numbered_effects + 1):
        key = ctx.effect_key(str(slot)).text
        found = await runtime.effect(run_id, key)
        if (
            found is not None
            and found.kind == MODEL_EFFECT
            and found.status == EffectStatus.DONE
            and found.outcome is not None
        ):
            used = found.outcome.get("usage") or {}
            scope.failed_usage[key] = Usage.from_dict(used, trusted=True)


def carry_kept(
    scope: RunScope, ctx: VisitContext, patch: dict[str, Any], *, children: bool = False
) -> tuple[str, ...]:
    """Add to the visit's patch what is kept of the visit and of the child graphs it ran
    (with `children`, also their usage so far: the visit failed and was routed, so its patch
    does not carry them); the keys to drop once its transition is journaled."""
    sep = NodePath.SEPARATOR
    own = f"{scope.run_id}:{ctx.key_path}{ctx.node}:{ctx.visit}:"
    below = f"{scope.run_id}:{ctx.key_path}{ctx.node}.{ctx.visit}{sep}"
    keys = tuple(k for k in scope.failed_usage if k.startswith((own, below)))
    extra = sum((scope.failed_usage[k] for k in keys), Usage())
    if children:  # (dropped by the transition's journaling, as a node's own children are)
        path = ctx.qualified_node + sep
        extra += sum((u for p, u in scope.child_usage.items() if p.startswith(path)), Usage())
    if extra:
        patch["usage"] = (Usage.from_dict(patch.get("usage") or {}) + extra).to_dict()
    return keys


def drop_carried(scope: RunScope, keys: tuple[str, ...]) -> None:
    """Forget what a journaled transition carries now."""
    for key in keys:
        scope.failed_usage.pop(key, None)

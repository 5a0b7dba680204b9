"""Journaling a node visit's transition: its seq, its snapshot, its audit entry, and a value
the journal refuses named by node and field."""

from __future__ import annotations

import time
from typing import Any

from loomgraph.engine import audit_trail as trail
from loomgraph.engine.context import VisitContext
from loomgraph.engine.scope import RunScope
from loomgraph.engine.state_size import StateNotJson, check_journaled
from loomgraph.errors import StateError
from loomgraph.graph.state import snapshot_of
from loomgraph.protocols import AuditAction, Runtime, Transition, Usage
from loomgraph.protocols.paths import NodePath


async def journal_transition(
    scope: RunScope,
    ctx: VisitContext,
    state: dict[str, Any],
    patch: dict[str, Any],
    target: str,
    used: Usage,
) -> Transition | StateError:
    """Take the visit's seq and journal its transition (and its audit entry); the error
    naming the value the journal refused instead, with the seq given back."""
    scope.seq += 1
    snapshot = None
    every = scope.deps.runtime.snapshot_every
    if every and not ctx.path and scope.seq - scope.snapshot_seq >= every:
        snapshot, scope.snapshot_seq = snapshot_of(state), scope.seq
    qualified, visit = ctx.qualified_node, ctx.visit
    transition = Transition(
        scope.run_id, scope.seq, qualified, visit, patch, target, used, time.time(), snapshot
    )
    refused = await _append(scope.deps.runtime, transition)
    if refused is not None:
        scope.seq -= 1
        return refused
    if scope.child_usage:  # the transition carries what the node's child graphs used
        below = qualified + NodePath.SEPARATOR
        for path in [p for p in scope.child_usage if p.startswith(below)]:
            del scope.child_usage[path]
    if scope.auditing:
        moved = trail.transition(transition.seq, qualified, visit, target)
        await scope.audit(AuditAction.TRANSITION, qualified, moved)
    return transition


async def _append(runtime: Runtime, transition: Transition) -> StateError | None:
    """Journal a transition; `StateNotJson` naming the node and the field when the journal
    refuses a value of its patch that is not plain JSON (nothing was written), else None.
    The interpreter refuses such values of a node's patch before (`state_size`): this names
    what a journal refuses of a patch no check saw."""
    try:
        await runtime.append_transition(transition)
    except TypeError:  # what a journal raises for it (JournalEncodingError is a TypeError)
        try:
            check_journaled(transition.node, transition.patch)
        except StateNotJson as err:
            return err
        raise
    return None

"""The `run_started` audit entry of a run, as its session writes it: for a new run once its
start is journaled, for a run going on from a checkpoint (resumed, forked) when it is opened.

At a resume the entries an audit outage cut off the run before, which its journal kept, go
first (`restore_kept`): the run's trail has no gap. The `run_started` event is the session's
own step (`AgentSession._announce`).
"""

from __future__ import annotations

from loomgraph.engine import audit_trail as trail
from loomgraph.engine.audit_writer import restore_kept
from loomgraph.engine.scope import RunScope
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import AuditAction

__all__ = ["audit_started"]


async def audit_started(
    scope: RunScope,
    graph: CompiledGraph,
    prompt: str,
    *,
    continued: bool,
    resumed: bool = False,
    parent_run_id: str | None = None,
) -> None:
    """The `run_started` audit entry (naming the run a fork was made from); at a resume,
    after the entries an audit outage cut off the run before, which its journal kept
    (`restore_kept`)."""
    if scope.auditing:
        if resumed:  # (before any entry of the resume's own: the writer is new)
            await restore_kept(scope.writer(), scope.deps.runtime)
        started = trail.run_started(
            graph.name,
            graph.hash,
            scope.session_id,
            continued=continued,
            prompt=prompt if scope.audit_content else None,
            parent_run_id=parent_run_id,
        )
        await scope.audit(AuditAction.RUN_STARTED, trail.RUN_ACTOR, started)

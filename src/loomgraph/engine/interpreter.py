"""The one generic interpreter: it runs any compiled graph against a dependency bundle.

It knows no node kind and no backend by name: nodes run through their `NodeContext`, and the
journal, budget and hooks are reached only through the protocols in the bundle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from loomgraph.engine.context import VisitContext
from loomgraph.engine.cut_visits import charge_cut, keep_cut, leave_cut, release_cut
from loomgraph.engine.kept_usage import (
    NOTHING_CARRIED,
    carry_kept,
    drop_carried,
    keep_visit_calls,
)
from loomgraph.engine.scope import RunScope
from loomgraph.engine.state_size import SizeUndo, check_journaled
from loomgraph.engine.transitions import journal_transition
from loomgraph.engine.visits import NO_USAGE, applied, run_visit
from loomgraph.engine.watched import watched
from loomgraph.errors import GraphError, NodeError, ServiceUnavailable, StateError
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.registry import NodeKind
from loomgraph.graph.spec import END
from loomgraph.graph.state import Undo, undo_patch
from loomgraph.protocols import (
    AuditAction,
    BudgetExceeded,
    Pending,
    Reservation,
    RunStatus,
    RunStopped,
    Usage,
    semconv,
)
from loomgraph.protocols.events import (
    BUDGET_EXCEEDED,
    ERROR,
    NODE_COMPLETED,
    NODE_STARTED,
)
from loomgraph.protocols.runtime import StopDeferred
from loomgraph.protocols.tasks import stops_the_task


@dataclass(slots=True)
class Outcome:
    """How a graph invocation ended, and the state it ended with."""

    status: RunStatus
    reason: str
    state: dict[str, Any]
    node: str | None = None
    visits: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    pending: Pending | None = None
    # How a child graph stopped, raised again as it is by the node that ran it (`run_child`):
    # a stop that waits its turn stays one (`StopDeferred`).
    stopped: RunStopped | None = None


async def run_graph(
    graph: CompiledGraph,
    scope: RunScope,
    state: dict[str, Any],
    *,
    start: str | None = None,
    visits: dict[str, int] | None = None,
    path: str = "",
    key_path: str = "",
) -> Outcome:
    """Run from `start` (default: the entry) until END, an interrupt, a limit or an error."""
    limits = graph.graph.limits
    visits = visits if visits is not None else {}
    total = sum(visits.values())
    node = start or graph.graph.entry
    while node != END:
        visit = visits.get(node, 0) + 1
        if total >= limits.max_visits or visit > graph.node_limits[node]:
            # A child graph's own limit is its run's, not the whole run's.
            whole = f"graph {graph.graph.name!r} at {path.rstrip('/')}" if path else "run"
            cap = whole if total >= limits.max_visits else f"node {node!r}"
            limit = limits.max_visits if total >= limits.max_visits else graph.node_limits[node]
            reason = f"visit limit of {cap} reached ({limit}) before {path}{node}"
            return Outcome(RunStatus.LIMIT_REACHED, reason, state, node, visits)
        visits[node] = visit
        total += 1
        step = await _step(
            graph,
            scope,
            state,
            VisitContext(scope, node, visit, path, key_path),
            graph.nodes[node],
            graph.reads[node],
            graph.writes[node],
            visits,
        )
        if isinstance(step, Outcome):
            step.visits = visits
            return step
        node = step
    return Outcome(RunStatus.COMPLETED, "", state, None, visits)


async def run_extra_step(
    graph: CompiledGraph,
    scope: RunScope,
    state: dict[str, Any],
    step: NodeKind,
    visits: dict[str, int],
) -> Outcome:
    """Run one step that is not a node of the graph (an Agent's structured-answer step), once,
    after the graph completed: gated, journaled and reported like a node named `step.name`."""
    if step.name not in visits:
        visits[step.name] = 1
        ctx = VisitContext(scope, step.name, 1)
        reads, writes = tuple(step.reads()), frozenset(step.writes())
        outcome = await _step(graph, scope, state, ctx, step, reads, writes, visits)
        if isinstance(outcome, Outcome):
            outcome.visits = visits
            return outcome
    return Outcome(RunStatus.COMPLETED, "", state, None, visits)


async def run_child(
    graph: CompiledGraph,
    scope: RunScope,
    state: dict[str, Any],
    *,
    path: str,
    key_path: str,
) -> dict[str, Any]:
    """Run a child graph within a run (a `ChildRunner`); its final state, or raise how it
    stopped: the child's error, or `RunStopped` with its status."""
    outcome = await run_graph(graph, scope, state, path=path, key_path=key_path)
    # Until the node that ran it is journaled (a retry replaces it: the same path).
    scope.child_usage[path] = Usage.from_dict(outcome.state.get("usage") or {})
    if outcome.status != RunStatus.COMPLETED:
        if outcome.error is not None:
            raise outcome.error
        raise outcome.stopped or RunStopped(outcome.status, outcome.reason, outcome.pending)
    return outcome.state


async def _step(
    graph: CompiledGraph,
    scope: RunScope,
    state: dict[str, Any],
    ctx: VisitContext,
    kind: NodeKind,
    reads: tuple[str, ...],
    writes: frozenset[str],
    visits: dict[str, int],
) -> str | Outcome:
    """One node visit, journaled; the next node, or the Outcome the run ends with. The state
    changes by exactly the patch journaled: a failure after the node's patch undoes it."""
    deps, node, visit, qualified = scope.deps, ctx.node, ctx.visit, ctx.qualified_node
    reservation = counted = None
    try:
        if not (ctx.path and scope.redone_visits and _redone(scope.redone_visits, ctx)):
            reservation = await scope.reserve("node", NO_USAGE)
        if scope.listening:
            await ctx.emit(NODE_STARTED, {"node": qualified, "visit": visit})
        view = {name: state.get(name) for name in reads}
        hooks = scope.node_hooks
        if hooks is not None:
            # In copies, as for every hook: what one changes never reaches the run.
            await hooks.before_node(qualified, watched(view))
        if scope.tracing:
            attributes = semconv.node_attributes(node=qualified, run_id=scope.run_id, visit=visit)
            with deps.telemetry.span(semconv.node_span_name(qualified), attributes):
                patch = await run_visit(kind, view, ctx, graph, writes)
        else:
            patch = await run_visit(kind, view, ctx, graph, writes)
        # What failed attempts of the visit used: its transition carries it.
        carried = carry_kept(scope, ctx, patch) if scope.failed_usage else NOTHING_CARRIED
        # A child's state reaches the run's through the patches counted here.
        if not ctx.path:
            counted = scope.measured_state(graph.schema, state).check(qualified, patch)
        else:
            check_journaled(qualified, patch)
        # What the visit used, for its transition (a node's own `usage` is checked here).
        used = Usage.from_dict(patch["usage"]) if patch.get("usage") else NO_USAGE
        undo: Undo = []
        try:
            undo = applied(graph, qualified, state, patch)  # all or nothing
            if hooks is not None:
                await hooks.after_node(qualified, watched(patch))
            target = graph.next_node(node, state, visits)[0] if node in graph.nodes else END
            # Settled last, just before its transition is journaled: a hold that a crash or
            # an outage leaves is of a visit the journal lacks, which the resume does again
            # (and `crash_charges` gives back when the run is opened again).
            held, reservation = reservation, None
            await scope.settle(held, NO_USAGE)
            if scope.cut_visits:
                await charge_cut(scope, qualified)
        except BaseException:
            undo_patch(state, undo)  # the visit failed: it changed nothing
            _uncount(scope, counted)  # nor does its size count
            raise
    except BudgetExceeded as err:
        if scope.cut_visits:
            await charge_cut(scope, qualified)
        await keep_visit_calls(ctx)
        await ctx.emit(BUDGET_EXCEEDED, {"cap": err.cap, "reason": str(err)})
        if scope.auditing:
            block = {"cap": err.cap, "reason": str(err)}
            await scope.audit(AuditAction.BUDGET_BLOCK, qualified, block)
        return Outcome(RunStatus.BUDGET_EXHAUSTED, str(err), state, node, error=err)
    except RunStopped as stop:
        if not isinstance(stop, StopDeferred):  # a request journaled now would wait unseen
            scope.asking = True
        # The visit goes on when the run is resumed (the same visit, what it did replayed):
        # charged then, once, as in a run that never stopped. A child's hold waits for the
        # visit above it to say whether it is done again (`cut_visits`).
        if ctx.path:
            keep_cut(scope, qualified, reservation)
        else:
            await scope.release(reservation)
            await release_cut(scope)
        reservation = None
        await keep_visit_calls(ctx)
        return Outcome(stop.status, stop.reason, state, node, pending=stop.pending, stopped=stop)
    except ServiceUnavailable:
        # Not the node's failure: the run is recovered from its journal, the visit done
        # again. Its hold is left, as a crash leaves it: given back then, or at the run's end.
        _cut_off(scope, ctx, reservation)
        reservation = None
        raise
    except BaseException as err:  # SystemExit, a CancelledError of its own...: as a tool's
        if stops_the_task(err):
            # The run's task is cancelled (the caller or lease holder journals it), or a
            # child's by its map's time limit: as for an outage.
            _cut_off(scope, ctx, reservation)
            reservation = None
            raise
        error = err if isinstance(err, GraphError) else NodeError(qualified, err)
        if scope.cut_visits:
            await charge_cut(scope, qualified)
        await keep_visit_calls(ctx)
        await ctx.emit(ERROR, {"error": str(error), "type": type(err).__name__})
        if kind.spec.on_error is None:
            return Outcome(RunStatus.FAILED, str(error), state, node, error=error)
        # Routed to the handler node, with what failed in the `error` field; its transition
        # carries what the visit and its child graphs used.
        patch = {"error": routed_error(qualified, err)}
        carried = carry_kept(scope, ctx, patch, children=True)
        used = Usage.from_dict(patch["usage"]) if "usage" in patch else NO_USAGE
        counted = None  # (the failed patch's size was taken back)
        undo = graph.schema.apply(state, patch)
        target = kind.spec.on_error
        held, reservation = reservation, None
        await scope.settle(held, NO_USAGE)
    finally:
        if reservation is not None:  # the visit happened, even if it failed
            await scope.settle(reservation, NO_USAGE)
    if ctx.path:  # map branches step concurrently: their seqs are taken and written in order
        if scope.transitions_lock is None:
            scope.transitions_lock = asyncio.Lock()
        async with scope.transitions_lock:
            journaled = await journal_transition(scope, ctx, state, patch, target, used)
    else:
        journaled = await journal_transition(scope, ctx, state, patch, target, used)
    if not ctx.path:  # the visit a resume went on with is over: its children are done
        scope.redone_visits = None
        scope.asking = False  # a stop its node caught is over too: the next may ask
    if isinstance(journaled, StateError):  # nothing of the visit was written: the run ends
        undo_patch(state, undo)
        _uncount(scope, counted)
        await keep_visit_calls(ctx)
        await ctx.emit(ERROR, {"error": str(journaled), "type": type(journaled).__name__})
        return Outcome(RunStatus.FAILED, str(journaled), state, node, error=journaled)
    if carried:
        drop_carried(scope, carried)
    if scope.listening:
        await scope.emit(
            NODE_COMPLETED,
            {"node": qualified, "visit": visit, "next": target, "patch": patch},
            qualified,
            journaled.seq,
        )
    return target


def _cut_off(scope: RunScope, ctx: VisitContext, held: Reservation | None) -> None:
    """A visit cut off (an outage, a cancel): a child's hold waits for the visit above it;
    at the top the run is cut off, and every hold left as a crash leaves it."""
    if ctx.path:
        keep_cut(scope, ctx.qualified_node, held)
    else:
        leave_cut(scope)


def _redone(redone: set[tuple[str, int]], ctx: VisitContext) -> bool:
    """Whether this child visit is one the run made before it stopped (charged then), done
    again by its resume: taken from `redone`, once. (A child graph run twice inside the
    stopped visit names its visits alike: its second run's are charged again, never less.)"""
    made = (ctx.qualified_node, ctx.visit)
    if made not in redone:
        return False
    redone.discard(made)
    return True


def routed_error(node: str, err: BaseException) -> dict[str, str]:
    """The `error` field a node's failure routed by `on_error` writes: which node, the
    error's type and its message."""
    return {"node": node, "type": type(err).__name__, "message": str(err)}


def _uncount(scope: RunScope, counted: SizeUndo | None) -> None:
    """Take a patch that was undone out of the run's state size."""
    if counted is not None and scope.state_size is not None:
        scope.state_size.undo(counted)

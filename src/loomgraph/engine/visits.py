"""One node visit run: under the run's deadline, the node's `timeout` and `retry` policies,
its patch checked against the fields it writes and their types, and applied all or nothing.
The one path of a visit: the interpreter's steps and `loomgraph.testing.run_node` take it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loomgraph.engine.context import VisitContext
from loomgraph.engine.kept_usage import keep_visit_calls
from loomgraph.engine.users_view import run_users_node
from loomgraph.errors import ServiceUnavailable, StateError
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.registry import NodeKind
from loomgraph.graph.state import Undo
from loomgraph.protocols import BudgetExceeded, RunStopped, Usage
from loomgraph.protocols.events import NODE_RETRY
from loomgraph.protocols.governance import KEPT_DEADLINE
from loomgraph.protocols.tasks import stops_the_task

# A visit's empty amount: Usage is frozen, so one instance serves every step.
NO_USAGE = Usage()
# What a node's patch is checked against: the graph's schema, and the fields the node writes.
Checks = tuple[CompiledGraph, frozenset[str]]


async def run_visit(
    kind: NodeKind,
    view: dict[str, Any],
    ctx: VisitContext,
    graph: CompiledGraph,
    writes: frozenset[str],
) -> dict[str, Any]:
    """Run a node and check its patch: under the run's deadline (a child runs within its
    parent's), under its own policies, or as it is. The one path of a node's visit: a run's
    steps and `loomgraph.testing.run_node` both go through it."""
    deadline = ctx.scope.deadline
    if deadline is not None and not ctx.path:
        return await _run_by_deadline(kind, view, ctx, (graph, writes), deadline)
    spec = kind.spec
    if spec.retry is None and spec.timeout is None:
        return check_patch(graph, ctx.node, await _node_run(kind, view, ctx, graph), writes)
    return await _run_with_policy(kind, view, ctx, (graph, writes))


async def _node_run(
    kind: NodeKind, view: dict[str, Any], ctx: VisitContext, graph: CompiledGraph
) -> Any:
    """One attempt of the node: a user's node on a copy of the fields it reads, checked for
    changes made in place (`users_view`); the framework's own kinds on the view itself."""
    if ctx.node in graph.schema.users_nodes:
        return await run_users_node(kind, view, ctx)
    return await kind.run(view, ctx)


async def _run_by_deadline(
    kind: NodeKind, view: dict[str, Any], ctx: VisitContext, checks: Checks, deadline: float
) -> dict[str, Any]:
    """Run a node under its policies, stopped at the run's wall-clock deadline: what it was
    doing then is cancelled (a model call or tool call cut off is charged, as when a run is
    cancelled) and the run ends `budget_exhausted`, as the next reservation would."""
    left = deadline - time.time()
    if left <= 0:  # passed already (or the budget keeps another clock): its reservations say
        return await _run_with_policy(kind, view, ctx, checks)
    by_deadline = asyncio.timeout(left)
    try:
        async with by_deadline:
            return await _run_with_policy(kind, view, ctx, checks)
    except TimeoutError:
        if not by_deadline.expired():
            raise  # the node's own time limit
    stopped = f"{ctx.qualified_node!r} was stopped"
    try:  # the budget's own refusal names the cap (`global:` or the user's `wall_clock_s`)
        held = await ctx.scope.reserve("node", NO_USAGE)
    except BudgetExceeded as err:
        raise BudgetExceeded(err.cap, f"{err.detail}; {stopped}") from None
    await ctx.scope.settle(held, NO_USAGE)  # its clock says otherwise: the deadline's word
    raise BudgetExceeded(KEPT_DEADLINE, f"run {ctx.scope.run_id!r} reached its deadline; {stopped}")


async def _run_with_policy(
    kind: NodeKind, view: dict[str, Any], ctx: VisitContext, checks: Checks
) -> dict[str, Any]:
    """Run a node under its `timeout` and `retry` policies; an attempt whose patch fails its
    checks failed (with a StateError) and is retried like any other."""
    spec, (graph, writes) = kind.spec, checks
    attempts = spec.retry.attempts if spec.retry else 1
    for attempt in range(1, attempts + 1):
        try:
            if spec.timeout is None:
                patch = await _node_run(kind, view, ctx, graph)
            else:
                try:
                    async with asyncio.timeout(spec.timeout):
                        patch = await _node_run(kind, view, ctx, graph)
                except TimeoutError:
                    raise TimeoutError(
                        f"node {ctx.qualified_node!r} took longer than its timeout of "
                        f"{spec.timeout} s"
                    ) from None
            return check_patch(graph, ctx.node, patch, writes)
        except (BudgetExceeded, RunStopped, ServiceUnavailable):
            raise
        except BaseException as err:
            retry = spec.retry
            stop = attempt == attempts or stops_the_task(err)
            if retry is None or stop or not retry.retries(err):
                raise
            await keep_visit_calls(ctx)  # the next attempt's patch does not carry them
            delay = retry.delay(attempt)
            await ctx.emit(
                NODE_RETRY,
                {
                    "node": ctx.qualified_node,
                    "attempt": attempt,
                    "error": f"{type(err).__name__}: {err}",
                    "delay_s": delay,
                },
            )
            if delay:
                await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def applied(graph: CompiledGraph, node: str, state: dict[str, Any], patch: dict[str, Any]) -> Undo:
    """The visit's patch applied to the state (`StateSchema.apply`), a StateError named by the
    node that wrote it (a `merge` into a record is validated only once merged)."""
    try:
        return graph.schema.apply(state, patch)
    except StateError as err:
        raise StateError(f"node {node!r} wrote {err}") from None


def check_patch(
    graph: CompiledGraph, node: str, patch: Any, allowed: frozenset[str] | None = None
) -> dict[str, Any]:
    """A node's patch, checked against the fields it declared it writes and their types."""
    if not isinstance(patch, dict):
        raise StateError(f"node {node!r} returned {type(patch).__name__}, not a dict patch")
    if allowed is None:
        allowed = graph.writes[node]
    for name in patch:
        if name not in allowed:
            raise StateError(
                f"node {node!r} wrote {name!r}, which it does not declare in "
                f"`writes` ({', '.join(sorted(allowed)) or 'nothing'})"
            )
    try:
        schema = graph.schema
        checked = schema.check(patch)
        if node in schema.users_nodes:  # a user's data: its built-in fields checked too
            schema.check_written(node, checked)
    except StateError as err:  # named by the node that wrote it
        raise StateError(f"node {node!r} wrote {err}") from None
    return checked

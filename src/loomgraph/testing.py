"""Helpers to unit-test one node, or a whole graph, with fakes — in one call."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loomgraph.agent.answers import resume_value
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.agent.defaults import NO_VALUE
from loomgraph.agent.deps import build_deps
from loomgraph.agent.model_specs import UnknownModel
from loomgraph.authoring.library import load_graph
from loomgraph.engine.context import VisitContext
from loomgraph.engine.interpreter import routed_error, run_child
from loomgraph.engine.scope import RunScope
from loomgraph.engine.visits import applied, run_visit
from loomgraph.errors import GraphError, NodeError, ServiceUnavailable
from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.spec import Graph
from loomgraph.models.scripted import ScriptedModel, TurnLike
from loomgraph.protocols import BudgetExceeded, EffectRecord, Model, RunRecord, RunStopped
from loomgraph.protocols.events import ERROR, Event
from loomgraph.protocols.tasks import stops_the_task
from loomgraph.runtime.memory import InMemoryRuntime

__all__ = ["NodeRun", "UnknownNode", "run_node"]


class UnknownNode(GraphError, KeyError):
    """`run_node` was asked for a node its graph does not have; the message lists its nodes."""

    def __str__(self) -> str:  # a KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(slots=True)
class NodeRun:
    """What one node did: the patch it returned, the events it emitted, the effects it asked
    for, the state after its patch, and the node the run would go to next (`END` at the end)."""

    patch: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    effects: list[EffectRecord] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    next: str = ""

    def kinds(self) -> list[str]:
        """The kinds of the events, in order."""
        return [e.kind for e in self.events]


async def run_node(
    graph: Graph | str | Path,
    node: str,
    state: Mapping[str, Any] | None = None,
    *,
    model: Model | str | Sequence[TurnLike] | Callable[..., Any] | None = None,
    tools: Any = None,
    system: str = "",
    visit: int = 1,
    visits: Mapping[str, int] | None = None,
    user_id: str | None = "test-user",
    value: Any = NO_VALUE,
) -> NodeRun:
    """Run `node` of `graph` once against `state` with fakes (ScriptedModel, tools, in-memory
    journal), as a run's step runs it: the state checked as a run's (`StateError`), the node
    under its retry and timeout policies, its patch checked, then its edges tried (with
    `visits`, the other nodes' visit counts so far). A failure a run would route by the
    node's `on_error` is routed the same way (the `error` event and field, `next` the
    handler); without `on_error` it raises. `value` answers the interrupt the node raises, as
    `Agent.resume(run_id, value=...)` does: checked against the type it asked for
    (`ResumeError`), then the node runs again with it. A node (or a name in `visits`) the
    graph does not have raises `UnknownNode`; a `visit` below 1, a count in `visits` below
    0, or visits past the graph's limits raise `GraphError`: no run has them. `model` is a
    Model, a model spec (`"echo"`), or a script of turns (or its function) for a ScriptedModel."""
    compiled = compile_graph(load_graph(graph))
    _check_visits(compiled, node, visit, visits or {})
    # What a run is given from outside is checked, built-in fields too (`input` text,
    # `messages` messages): a node is tested against a state a run could have.
    full = compiled.schema.initial(compiled.schema.check_input(dict(state or {})))
    # A string names a model, as Agent(model=) reads it ("echo"); a script is a list.
    if not isinstance(model, str) and not isinstance(model, Model):
        model = ScriptedModel(model or [])
    runtime = InMemoryRuntime()
    try:
        deps = build_deps(model=model, tools=tools, runtime=runtime)
    except UnknownModel as err:
        if not isinstance(model, str):
            raise
        raise UnknownModel(f"{err}; for a scripted turn, a list: model=[{model!r:.40}]") from None
    events: list[Event] = []

    async def sink(event: Event) -> None:
        events.append(event)

    record = RunRecord(f"test-{uuid.uuid4().hex[:8]}", compiled.name, compiled.hash, user_id, None)
    await runtime.start_run(record)
    scope = RunScope(record.run_id, user_id, None, deps, sink, run_child, system=system)
    on_error = compiled.nodes[node].spec.on_error
    try:
        try:
            patch = await _visit(compiled, scope, full, node, visit)
        except RunStopped as stop:
            if value is NO_VALUE:
                raise
            # Answered as a resume answers the run this stopped: the same check of the value.
            stopped = replace(record, status=stop.status, result=_waiting(stop))
            scope.resume = resume_value(stopped, value)
            patch = await _visit(compiled, scope, full, node, visit)
        else:
            if value is not NO_VALUE:
                raise ResumeError(f"node {node!r} did not wait for a value: it returned {patch!r}")
        applied(compiled, node, full, patch)  # (a `merge` into a record is validated here)
    except (RunStopped, BudgetExceeded, ServiceUnavailable, ResumeError):
        raise  # a run stops, or is recovered, here: never routed
    except BaseException as err:  # SystemExit, a CancelledError of its own…: as a run's step
        if stops_the_task(err):
            raise  # the caller cancelled this test
        if on_error is None:
            if isinstance(err, Exception):
                raise  # as it fails the run
            # A run fails with it, and so does this: never an exit of the test's process.
            raise NodeError(node, err) from err
        # Routed as a run routes it: the `error` event, the `error` field, the handler node.
        error = err if isinstance(err, GraphError) else NodeError(node, err)
        await scope.emit(ERROR, {"error": str(error), "type": type(err).__name__}, node)
        patch = {"error": routed_error(node, err)}
        compiled.schema.apply(full, patch)
        return NodeRun(patch, events, await runtime.effects(record.run_id), full, on_error)
    # The edge a run takes after this step, tried as the interpreter tries it.
    target = compiled.next_node(node, full, {**(visits or {}), node: visit})[0]
    return NodeRun(patch, events, await runtime.effects(record.run_id), full, target)


def _check_visits(
    compiled: CompiledGraph, node: str, visit: int, visits: Mapping[str, int]
) -> None:
    """Refuse what no run could have: a node the graph does not have (`UnknownNode`), a
    visit of `node` before its first, a visit count below 0 or past a limit (`GraphError`)."""
    nodes = ", ".join(compiled.nodes)
    if node not in compiled.nodes:
        raise UnknownNode(f"graph {compiled.name!r} has no node {node!r}; nodes: {nodes}")
    for name in visits:
        if name not in compiled.nodes:
            raise UnknownNode(
                f"visits counts {name!r}, but graph {compiled.name!r} has no node {name!r}; "
                f"nodes: {nodes}"
            )
    # A bool is an int, but never a count somebody meant.
    if isinstance(visit, bool) or not isinstance(visit, int) or visit < 1:
        raise GraphError(
            f"visit={visit!r}: the visit of {node!r} being run, counted from 1 (its first)"
        )
    for name, count in visits.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise GraphError(
                f"visits[{name!r}]={count!r}: how often {name!r} ran before, from 0 (never)"
            )
    _check_limits(compiled, node, visit, visits)


def _check_limits(
    compiled: CompiledGraph, node: str, visit: int, visits: Mapping[str, int]
) -> None:
    """Refuse visits past the graph's limits, as the interpreter never runs them (the run
    ends `limit_reached` first): a node's `max_visits` (else `limits.max_node_visits`), and
    `limits.max_visits` of every node's visits together, this one included."""
    counts = {**visits, node: visit}
    for name, count in counts.items():
        cap = compiled.node_limits[name]
        if count > cap:
            said = f"visit={count}" if name == node else f"visits[{name!r}]={count}"
            raise GraphError(
                f"{said}: graph {compiled.name!r} allows {cap} visits of {name!r} per run "
                "(its max_visits, else limits.max_node_visits); no run reaches this one"
            )
    total, cap = sum(counts.values()), compiled.graph.limits.max_visits
    if total > cap:
        raise GraphError(
            f"visit={visit} with visits={dict(visits)!r} is visit {total} of the run; graph "
            f"{compiled.name!r} allows {cap} in all (limits.max_visits); no run reaches it"
        )


async def _visit(
    compiled: CompiledGraph, scope: RunScope, state: dict[str, Any], node: str, visit: int
) -> dict[str, Any]:
    """The node's visit, through the interpreter's own path (policies, patch checks, the
    state's size limit)."""
    view = {name: state.get(name) for name in compiled.reads[node]}
    ctx = VisitContext(scope, node, visit)
    patch = await run_visit(compiled.nodes[node], view, ctx, compiled, compiled.writes[node])
    scope.measured_state(compiled.schema, state).check(node, patch)  # StateTooLarge
    return patch


def _waiting(stop: RunStopped) -> dict[str, Any]:
    """The result a run stopped by `stop` journals: what it waits for."""
    return {"pending": None if stop.pending is None else stop.pending.to_dict()}

"""Helpers to unit-test one node, or a whole graph, with fakes — in one call."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loomgraph.agent.deps import build_deps
from loomgraph.authoring.library import load_graph
from loomgraph.engine.context import VisitContext
from loomgraph.engine.interpreter import check_patch, run_child
from loomgraph.engine.scope import RunScope
from loomgraph.graph.compiled import compile_graph
from loomgraph.graph.spec import Graph
from loomgraph.models.scripted import ScriptedModel, TurnLike
from loomgraph.protocols import EffectRecord, Model, RunRecord
from loomgraph.protocols.events import Event
from loomgraph.runtime.memory import InMemoryRuntime

__all__ = ["NodeRun", "run_node"]


@dataclass(slots=True)
class NodeRun:
    """What one node did: the patch it returned, the events it emitted, the effects it asked for."""

    patch: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    effects: list[EffectRecord] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def kinds(self) -> list[str]:
        """The kinds of the events, in order."""
        return [e.kind for e in self.events]


async def run_node(
    graph: Graph | str | Path,
    node: str,
    state: Mapping[str, Any] | None = None,
    *,
    model: Model | Sequence[TurnLike] | Callable[..., Any] | None = None,
    tools: Any = None,
    system: str = "",
    visit: int = 1,
    user_id: str | None = "test-user",
) -> NodeRun:
    """Run `node` of `graph` once against `state` with fakes (ScriptedModel, tools, in-memory
    journal), checking its patch as the interpreter would, and return what it did."""
    compiled = compile_graph(load_graph(graph))
    if node not in compiled.nodes:
        raise KeyError(
            f"graph {compiled.name!r} has no node {node!r}; nodes: {', '.join(compiled.nodes)}"
        )
    if model is None or not isinstance(model, Model):
        model = ScriptedModel(model or [])
    runtime = InMemoryRuntime()
    deps = build_deps(model=model, tools=tools, runtime=runtime)
    events: list[Event] = []

    async def sink(event: Event) -> None:
        events.append(event)

    run_id = f"test-{uuid.uuid4().hex[:8]}"
    await runtime.start_run(RunRecord(run_id, compiled.name, compiled.hash, user_id, None))
    scope = RunScope(run_id, user_id, None, deps, sink, run_child, system=system)
    full = compiled.schema.initial(state)
    view = {name: full.get(name) for name in compiled.reads[node]}
    patch = await compiled.nodes[node].run(view, VisitContext(scope, node, visit))
    patch = check_patch(compiled, node, patch)
    compiled.schema.apply(full, patch)
    return NodeRun(patch, events, await runtime.effects(run_id), full)

"""Runs pinned to their graph: the graph a run started with is kept in the journal, once per
hash, and compiled again from there to resume the run, whatever the Agent's graph is now.

What is kept is the graph as data: its spec and, under each name its nodes run another graph
by, that graph's spec, nested the same way. A run's `graph_hash` is the graph's content hash
when it runs no other graph, else a hash over its own and its children's, so a changed child
graph is a changed graph. Code is not kept: a `function` node's `call: module:fn`, a state
type named by import path and a node kind registered in Python are looked up again when the
kept graph is compiled; when one no longer imports, the resume raises `GraphChanged` naming
it (`movable`: `graph="current"` can then move the run to the Agent's graph).

Moving a run to another graph (`graph="current"`) is checked first: the node it goes on at,
every node it visited and every field of its state must be in the new graph, each value
must fit the field's new type, and a run stopped inside a child graph needs that child and
the node that runs it unchanged; otherwise `GraphChanged` names the node or field and the seq.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from typing import Any, Literal

from loomgraph.agent.answers import stopped_at
from loomgraph.agent.checkpoints import GraphChanged, Position, is_top_level
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.errors import GraphError, StateError
from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.spec import END, Graph
from loomgraph.nodes.subgraph import ChildGraphNode
from loomgraph.protocols import PinnedGraph, RunReader, RunRecord, RunWriter, Transition
from loomgraph.protocols.paths import NodePath

# Which graph a resumed run goes on with: the one it started with, or the Agent's.
GraphChoice = Literal["pinned", "current"]
GRAPH_CHOICES: tuple[GraphChoice, ...] = ("pinned", "current")

_PINNED: weakref.WeakKeyDictionary[CompiledGraph, PinnedGraph] = weakref.WeakKeyDictionary()


def pinned_graph(compiled: CompiledGraph) -> PinnedGraph:
    """The graph as the journal keeps it (computed once per compiled graph)."""
    pinned = _PINNED.get(compiled)
    if pinned is None:
        spec, key = _spec(compiled)
        pinned = _PINNED[compiled] = PinnedGraph(key, compiled.name, spec)
    return pinned


def graph_key(compiled: CompiledGraph) -> str:
    """The hash runs of this graph are journaled with (`RunRecord.graph_hash`)."""
    return pinned_graph(compiled).hash


def _spec(compiled: CompiledGraph) -> tuple[dict[str, Any], str]:
    spec: dict[str, Any] = {"graph": compiled.graph.to_data()}
    children: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    for node in compiled.nodes.values():
        if isinstance(node, ChildGraphNode) and node.params.graph not in children:
            child, hashes[node.params.graph] = _spec(compile_graph(node.child))
            children[node.params.graph] = child
    if not children:
        return spec, compiled.hash
    spec["children"] = children
    canonical = json.dumps({"graph": compiled.hash, "children": hashes}, sort_keys=True)
    return spec, hashes_digest(canonical)


def hashes_digest(text: str) -> str:
    """A short hash of text, in the form of `Graph.content_hash`."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def pin(runtime: RunWriter, compiled: CompiledGraph) -> None:
    """Keep the graph in the journal before a run of it starts."""
    await runtime.put_graph(pinned_graph(compiled))


async def move_run(runtime: RunWriter, record: RunRecord, compiled: CompiledGraph) -> None:
    """Pin a run to another graph: its later resumes go on with that one."""
    pinned = pinned_graph(compiled)
    await runtime.move_run(record.run_id, pinned)
    record.graph_name, record.graph_hash = pinned.name, pinned.hash


def compile_pinned(pinned: PinnedGraph) -> CompiledGraph:
    """The kept graph, validated and compiled; GraphError when that fails here."""
    return compile_graph(_graph(pinned.spec))


def _graph(spec: dict[str, Any]) -> Graph:
    children = {ref: _graph(child) for ref, child in (spec.get("children") or {}).items()}

    def resolve(ref: str, parent: Graph) -> Graph:
        if ref not in children:
            raise GraphError(f"the kept graph {parent.name!r} has no child graph {ref!r}")
        return children[ref]

    graph = graph_from_data(spec.get("graph"), validate=False)
    graph._resolver = resolve  # its children are the kept ones, not today's files
    return load_graph(graph)  # validated like any graph the Agent is given


async def run_graph(
    runtime: RunReader, record: RunRecord, current: CompiledGraph, cache: dict[str, CompiledGraph]
) -> CompiledGraph | None:
    """The graph `record` started with: the Agent's when the hashes match, else the kept one
    (compiled once per hash into `cache`); None when the journal does not keep it.

    Raises GraphChanged when the kept graph no longer compiles here (an import path gone).
    """
    if record.graph_hash == graph_key(current):
        return current
    if record.graph_hash in cache:
        return cache[record.graph_hash]
    pinned = await runtime.graph(record.graph_hash)
    if pinned is None:
        return None
    try:
        compiled = compile_pinned(pinned)
    except (GraphError, ImportError, ValueError) as err:
        raise GraphChanged(
            f"run {record.run_id} started with graph {record.graph_name!r} version "
            f"{record.graph_hash}, which the journal keeps but which does not compile here: "
            f"{err}",
            run_id=record.run_id,
            movable=True,
        ) from None
    cache[record.graph_hash] = compiled
    return compiled


def not_kept(record: RunRecord, current: CompiledGraph) -> GraphChanged:
    """The error for a run whose graph changed and is not in the journal."""
    return GraphChanged(
        f"run {record.run_id} started with graph {record.graph_name!r} version "
        f"{record.graph_hash}, which the journal does not keep (the run is older than kept "
        f"graphs); this agent's graph {current.name!r} is version {graph_key(current)}",
        run_id=record.run_id,
        movable=True,
    )


def check_move(
    record: RunRecord,
    at: Position,
    transitions: Sequence[Transition],
    old: CompiledGraph | None,
    new: CompiledGraph,
) -> dict[str, Any]:
    """The run's state moved onto `new` (new fields at their defaults); GraphChanged naming
    the node or field of the run's position (at seq `at.seq`) that `new` lacks."""

    def refuse(what: str, *, node: str | None = None, field: str | None = None) -> GraphChanged:
        return GraphChanged(
            f"run {record.run_id} cannot move to graph {new.name!r} version "
            f"{graph_key(new)}: {what} (the run's position at seq {at.seq})",
            run_id=record.run_id,
            seq=at.seq,
            node=node,
            field=field,
        )

    nodes = new.graph.nodes
    if at.next_node != END and at.next_node not in nodes:
        raise refuse(
            f"it goes on at node {at.next_node!r}, which the graph has not", node=at.next_node
        )
    pending = stopped_at(record)
    if pending is not None and pending.node:
        top = NodePath.parse(pending.node).parts[0]
        if top not in nodes:
            raise refuse(f"it waits at node {pending.node!r}, which the graph has not", node=top)
    for name in sorted(at.visits):
        if name not in nodes:
            raise refuse(f"it visited node {name!r}, which the graph has not", node=name)
    _same_child(record, at, transitions, old, new, refuse)
    fields = new.schema.fields
    for name, value in at.state.items():
        if name not in fields:
            raise refuse(f"its state has field {name!r}, which the graph has not", field=name)
        before = old.schema.fields.get(name) if old is not None else None
        if value is None or (before is not None and before.type == fields[name].type):
            continue
        try:
            new.schema.check({name: value}, whole=True)  # a value, not a patch
        except StateError as err:
            raise refuse(
                f"its state field {name!r} does not fit the type {fields[name].type!r}: {err}",
                field=name,
            ) from None
    state = new.schema.initial()
    state.update(at.state)
    return state


def _same_child(
    record: RunRecord,
    at: Position,
    transitions: Sequence[Transition],
    old: CompiledGraph | None,
    new: CompiledGraph,
    refuse: Any,
) -> None:
    """A run stopped inside a child graph goes on inside it: that child must be unchanged,
    and so must the node that runs it (what a `map` maps over, its item and result fields,
    a prompt, the fields mapped in and out): its finished branches and the child's answers
    and effects are replayed from the journal, and must be what the node would make now."""
    last_top = max((t.seq for t in transitions if is_top_level(t)), default=0)
    inside = {
        NodePath.parse(t.node).parts[0]
        for t in transitions
        if t.seq > last_top and not is_top_level(t)
    }
    pending = stopped_at(record)
    if pending is not None and pending.node and not NodePath.parse(pending.node).is_top_level:
        inside.add(NodePath.parse(pending.node).parts[0])  # waits at a child's first node
    for name in sorted(inside):
        before = old.nodes.get(name) if old is not None else None
        after = new.nodes.get(name)
        if not isinstance(after, ChildGraphNode):
            raise refuse(f"it stopped inside node {name!r}, which runs no graph there", node=name)
        if not isinstance(before, ChildGraphNode) or graph_key(
            compile_graph(before.child)
        ) != graph_key(compile_graph(after.child)):
            raise refuse(
                f"it stopped inside node {name!r}, whose graph {after.params.graph!r} changed",
                node=name,
            )
        changed = _changed_settings(before, after)
        if changed:
            raise refuse(
                f"it stopped inside node {name!r}, whose own settings changed "
                f"({', '.join(changed)})",
                node=name,
            )


def _changed_settings(before: ChildGraphNode, after: ChildGraphNode) -> list[str]:
    """The settings of a node that runs a child graph that differ between two graphs: its
    kind, parameters, reads, writes and policies (the child graph itself, named by `graph`,
    is compared by its content; a description is text only)."""
    old, new = _settings(before), _settings(after)
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def _settings(node: ChildGraphNode) -> dict[str, Any]:
    data = node.spec.model_dump(mode="json")
    for name in ("graph", "description"):
        data.pop(name, None)
    return data

"""A validated graph made ready to run: node instances, compiled conditions, the state schema."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loomgraph.errors import ConditionError
from loomgraph.graph.conditions import compile_condition, condition_scope, names_used
from loomgraph.graph.node_context import RunnableGraph
from loomgraph.graph.registry import NodeKind, node_kind
from loomgraph.graph.spec import END, Graph
from loomgraph.graph.state import StateSchema


@dataclass(slots=True, frozen=True)
class Route:
    """One outgoing edge: its position in the file, its condition (if any) and its target."""

    index: int
    position: int  # among its node's edges, from 1, as diagrams number it
    target: str
    when: str | None
    test: Callable[..., Any] | None
    names: frozenset[str]


class CompiledGraph:
    """Everything the interpreter needs from a graph, computed once per graph."""

    def __init__(self, graph: Graph) -> None:
        # A copy of its own: editing `graph` later (its limits, an edge) must not change
        # what an Agent built on it runs; compiling the edited graph makes another one.
        self.graph = graph = graph.model_copy(deep=True)
        self.name = graph.name
        self.hash = graph.content_hash()
        self.schema = StateSchema(graph)
        self.nodes: dict[str, NodeKind] = {}
        for name, spec in graph.nodes.items():
            cls = node_kind(spec.kind)
            self.nodes[name] = cls(name, spec, cls.Params.model_validate(spec.params))
            self.nodes[name].bind(graph)
        self.reads = {name: tuple(n.reads()) for name, n in self.nodes.items()}
        self.writes = {name: frozenset(n.writes()) for name, n in self.nodes.items()}
        self.routes: dict[str, tuple[Route, ...]] = {}
        for index, edge in enumerate(graph.edges):
            test = compile_condition(edge.when) if edge.when else None
            names = frozenset(names_used(edge.when, expression=True)) if edge.when else frozenset()
            siblings = self.routes.get(edge.source, ())
            route = Route(index, len(siblings) + 1, edge.target, edge.when, test, names)
            self.routes[edge.source] = (*siblings, route)
        self.node_limits = {
            name: spec.max_visits or graph.limits.max_node_visits
            for name, spec in graph.nodes.items()
        }

    def next_node(
        self, node: str, state: Mapping[str, Any], visits: Mapping[str, int] | None = None
    ) -> tuple[str, int]:
        """The target and file index of the first edge from `node` whose condition holds."""
        scope: dict[str, Any] | None = None
        for route in self.routes.get(node, ()):
            if route.test is None:
                return route.target, route.index
            if scope is None:
                scope = condition_scope(state, visits)
            try:
                # Only the names the condition uses: Jinja copies its whole context per call.
                holds = route.test(**{k: scope[k] for k in route.names if k in scope})
            except Exception as err:
                routes = self.routes[node]
                raise ConditionError(
                    node,
                    route.index,
                    route.when or "",
                    err,
                    position=route.position if len(routes) > 1 else None,
                    target=route.target,
                ) from err
            if holds:
                return route.target, route.index
        # Validation guarantees a default edge or END reachability; a node with no edge ends.
        return END, -1


def compile_graph(graph: Graph) -> CompiledGraph:
    """The compiled form of a graph as it is now: compiled once per content, file and
    resolver (`Graph.memo`), so a copy or an edited graph is never run as another one."""
    memo = graph.memo()
    compiled = memo.compiled
    if not isinstance(compiled, CompiledGraph):
        compiled = memo.compiled = CompiledGraph(graph)
    return compiled


def runnable(graph: Graph | RunnableGraph) -> CompiledGraph:
    """What runs `graph`: a compiled graph as it is (a child-graph node's child, compiled
    with it: no content key worked out per run), a `Graph` compiled as it reads now."""
    if isinstance(graph, CompiledGraph):
        return graph
    return compile_graph(graph if isinstance(graph, Graph) else graph.graph)

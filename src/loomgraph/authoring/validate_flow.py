"""Flow rules of graph validation: entry, edge endpoints, shadowed edges, reachability, loops,
and what edge conditions read that no run can give them (visits of no node, unset fields).

The flow graph models what the interpreter does: a node's edges are tried in file order and
the first that holds wins, so an unconditional edge hides every later edge from that node;
a node whose conditional edges all fail (or that has no edge) ends the run, as if it had an
edge to END.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped,unused-ignore]

from loomgraph.errors import Problem
from loomgraph.graph.conditions import names_used, visit_names
from loomgraph.graph.field_types import parse_type
from loomgraph.graph.policies import known_error_type
from loomgraph.graph.registry import NodeKind
from loomgraph.graph.spec import END, Graph

Path = tuple[str | int, ...]


class _Exit:
    """The end of a run in the flow graph (not the string END: a node may be named that)."""

    def __repr__(self) -> str:
        return "END"


EXIT = _Exit()


# --------------------------------------------------------------------------- helpers


def problem_at(graph: Graph, rule: str, message: str, *path: str | int) -> Problem:
    """A Problem at the line of `path` (or its nearest parent, else the top of the file)."""
    line = graph.line_of(*path) if path else None
    if line is None:
        line = graph._lines.get(())
    return Problem(rule, message, graph.source, line)


def did_you_mean(name: str, options: Iterable[str], *, ignore_case: bool = False) -> str:
    """A ` (did you mean 'x'?)` hint for a misspelt name, or ''."""
    options = list(options)
    if name.lower() == END.lower() and name != END:
        return f" (did you mean {END}?)"
    if ignore_case and (same := [o for o in options if o.lower() == name.lower()]):
        return f" (did you mean {same[0]!r}?)"
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names) or "none"


# --------------------------------------------------------------------------- rules


def check_entry(graph: Graph) -> list[Problem]:
    """`no-nodes`, `missing-entry` and `unknown-entry`."""
    if not graph.nodes:
        return [
            problem_at(
                graph,
                "no-nodes",
                "the graph has no nodes; add at least one under `nodes:` and name it in `entry:`",
                "nodes",
            )
        ]
    if not graph.entry:
        return [
            problem_at(
                graph,
                "missing-entry",
                f"no `entry:`; name the node the run starts at (nodes: {_names(graph.nodes)})",
                "entry",
            )
        ]
    if graph.entry not in graph.nodes:
        return [
            problem_at(
                graph,
                "unknown-entry",
                f"entry {graph.entry!r} is not a node{did_you_mean(graph.entry, graph.nodes)}; "
                f"nodes: {_names(graph.nodes)}",
                "entry",
            )
        ]
    return []


def check_edges(graph: Graph) -> list[Problem]:
    """`unknown-endpoint` (an edge from or to no node) and `shadowed-edge`."""
    problems: list[Problem] = []
    first_default: dict[str, int] = {}  # node -> index of its first unconditional edge
    for i, edge in enumerate(graph.edges):
        if edge.source == END and END not in graph.nodes:
            problems.append(
                problem_at(
                    graph,
                    "unknown-endpoint",
                    "an edge cannot start at END: the run has ended there",
                    "edges",
                    i,
                    "from",
                )
            )
        elif edge.source not in graph.nodes:
            problems.append(
                problem_at(
                    graph,
                    "unknown-endpoint",
                    f"edge from {edge.source!r}: no such node"
                    f"{did_you_mean(edge.source, graph.nodes)}; nodes: {_names(graph.nodes)}",
                    "edges",
                    i,
                    "from",
                )
            )
        if edge.target != END and edge.target not in graph.nodes:
            problems.append(
                problem_at(
                    graph,
                    "unknown-endpoint",
                    f"edge to {edge.target!r}: no such node and not END"
                    f"{did_you_mean(edge.target, [*graph.nodes, END])}",
                    "edges",
                    i,
                    "to",
                )
            )
        if edge.source not in graph.nodes:
            continue
        if edge.source in first_default:
            j = first_default[edge.source]
            problems.append(
                problem_at(
                    graph,
                    "shadowed-edge",
                    f"edge from {edge.source!r} to {edge.target!r} is never taken: the edge from "
                    f"{edge.source!r} to {graph.edges[j].target!r} on line "
                    f"{graph.line_of('edges', j)} has no `when`, and edges are tried in file "
                    "order; "
                    "move this edge above it or remove it",
                    "edges",
                    i,
                )
            )
        elif edge.when is None:
            first_default[edge.source] = i
    return problems


def check_condition_reads(graph: Graph, instances: Mapping[str, NodeKind]) -> list[Problem]:
    """`undefined-read` in a `when`: `visits.x` where `x` is no node of the graph, and a
    declared field that no node writes, that has no default, and whose type has no None (it
    would be None at every run, a value its type does not allow)."""
    written = {
        field
        for name, spec in graph.nodes.items()
        for field in (instances[name].writes() if name in instances else spec.writes or ())
    }
    problems: list[Problem] = []
    for i, edge in enumerate(graph.edges):
        if edge.when is None:
            continue
        where = f"edge from {edge.source!r} to {edge.target!r}: condition {edge.when!r}"
        for node in visit_names(edge.when):
            if node in graph.nodes:
                continue
            read = f"visits.{node}" if node.isidentifier() else f"visits[{node!r}]"
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"{where} reads {read}, but {node!r} is not a node of this graph"
                    f"{did_you_mean(node, graph.nodes)}; nodes: {_names(graph.nodes)}",
                    "edges",
                    i,
                    "when",
                )
            )
        for name in sorted(names_used(edge.when, expression=True) & set(graph.state)):
            field = graph.state[name]
            if name in written or field.default is not None:
                continue
            if _admits_none(field.type, graph.source):
                continue
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"{where} reads {name!r}, which no node writes and which has no default, so "
                    f"it is unset (None) at every run, which its type {field.type!r} does not "
                    f"allow; add {name!r} to the `writes` of the node that sets it, or give "
                    "the field a `default:` (also when a parent graph fills it through "
                    "`inputs:`)",
                    "edges",
                    i,
                    "when",
                )
            )
    return problems


def _admits_none(text: str, near: str | None) -> bool:
    """Whether None is a value of the type string `text` (`any`, `T | None`); True when it
    does not parse (reported as `bad-type`)."""
    try:
        parsed = parse_type(text, near=near)
    except Exception:  # an imported module may raise anything
        return True
    return any(option in (Any, type(None)) for option in _options(parsed))


def _options(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [o for arg in get_args(tp) for o in _options(arg)]
    return [tp]


def flow_graph(graph: Graph) -> nx.DiGraph:
    """The routes a run can take: node -> node or EXIT, each edge with its file `index`.

    Edges hidden behind an unconditional edge are left out; a node without an unconditional
    edge also gets a fall-through edge to EXIT. Unknown targets (reported as
    `unknown-endpoint`) count as EXIT so that one typo is not reported again as a loop.
    """
    # Imported here: validating a graph is the one thing that needs it (~0.1 s to import).
    import networkx as nx  # type: ignore[import-untyped,unused-ignore]

    flow = nx.DiGraph()
    flow.add_node(EXIT)
    flow.add_nodes_from(graph.nodes)
    closed: set[str] = set()
    for i, edge in enumerate(graph.edges):
        if edge.source not in graph.nodes or edge.source in closed:
            continue
        target = edge.target if edge.target in graph.nodes and edge.target != END else EXIT
        if not flow.has_edge(edge.source, target) or edge.when is None:
            flow.add_edge(edge.source, target, index=i, default=edge.when is None)
        if edge.when is None:
            closed.add(edge.source)
    for name, spec in graph.nodes.items():
        if name not in closed:
            flow.add_edge(name, EXIT, index=None, default=False)
        # A failure can route to the `on_error` handler: a way in, and out of a loop.
        if spec.on_error in graph.nodes and not flow.has_edge(name, spec.on_error):
            flow.add_edge(name, spec.on_error, index=None, default=False)
    return flow


def check_policies(graph: Graph) -> list[Problem]:
    """`unknown-endpoint` for an `on_error` naming no node; `bad-retry` for unknown errors."""
    problems: list[Problem] = []
    for name, spec in graph.nodes.items():
        if spec.on_error is not None and spec.on_error not in graph.nodes:
            problems.append(
                problem_at(
                    graph,
                    "unknown-endpoint",
                    f"node {name!r}: on_error {spec.on_error!r} is no "
                    f"node{did_you_mean(spec.on_error, graph.nodes)}",
                    "nodes",
                    name,
                    "on_error",
                )
            )
        for i, error in enumerate(spec.retry.errors if spec.retry else ()):
            if not known_error_type(error):
                problems.append(
                    problem_at(
                        graph,
                        "bad-retry",
                        f"node {name!r}: retry on unknown error type "
                        f"{error!r}; use a built-in exception name (e.g. TimeoutError) or a "
                        "loomgraph error (e.g. ModelRateLimited)",
                        "nodes",
                        name,
                        "retry",
                        "errors",
                        i,
                    )
                )
    return problems


def closed_loops(flow: nx.DiGraph) -> list[set[str]]:
    """The cycles a run can enter but never leave (strongly connected, no route out)."""
    import networkx as nx  # type: ignore[import-untyped,unused-ignore]

    loops = []
    for component in nx.strongly_connected_components(flow):
        if EXIT in component:
            continue
        first = next(iter(component))
        if len(component) == 1 and not flow.has_edge(first, first):
            continue
        if all(succ in component for node in component for succ in flow.successors(node)):
            loops.append(set(component))
    return loops


def check_flow(graph: Graph) -> list[Problem]:
    """`unreachable-node`, `cycle-without-exit` and `no-path-to-end`."""
    import networkx as nx  # type: ignore[import-untyped,unused-ignore]

    flow = flow_graph(graph)
    order = {name: i for i, name in enumerate(graph.nodes)}
    problems: list[Problem] = []
    if graph.entry in graph.nodes:
        reached = nx.descendants(flow, graph.entry) | {graph.entry}
        problems += [
            problem_at(
                graph,
                "unreachable-node",
                f"node {name!r} is never run: no edge leads to it from the entry {graph.entry!r}",
                "nodes",
                name,
            )
            for name in graph.nodes
            if name not in reached
        ]
    loops = sorted(
        (sorted(loop, key=order.__getitem__) for loop in closed_loops(flow)),
        key=lambda loop: order[loop[0]],
    )
    for loop in loops:
        index = min(
            data["index"] for u, _, data in flow.out_edges(loop, data=True) if data["default"]
        )
        what = (
            f"node {loop[0]!r} loops to itself"
            if len(loop) == 1
            else f"nodes {' -> '.join(repr(n) for n in loop)} form a loop"
        )
        problems.append(
            problem_at(
                graph,
                "cycle-without-exit",
                f"{what} with no way out: every edge that can be taken stays in the loop, so a run "
                "only stops at the visit limit; add an edge with a `when` that leaves it (e.g. to "
                "END) before the unconditional one",
                "edges",
                index,
            )
        )
    trapped = set().union(*loops)
    can_end = nx.ancestors(flow, EXIT)
    for name in graph.nodes:
        if name in can_end or name in trapped:
            continue
        ahead = nx.descendants(flow, name) & trapped
        into = _names(sorted(ahead, key=order.__getitem__))
        problems.append(
            problem_at(
                graph,
                "no-path-to-end",
                f"node {name!r} can never reach END: every route from it "
                f"runs into the endless loop of {into}",
                "nodes",
                name,
            )
        )
    return problems

"""Flow rules of graph validation: entry, edge endpoints, shadowed edges, reachability, loops.

The flow graph models what the interpreter does: a node's edges are tried in file order and
the first that holds wins, so an unconditional edge hides every later edge from that node;
a node whose conditional edges all fail (or that has no edge) ends the run, as if it had an
edge to END. A `when` whose value depends on nothing is read for what it is (`edge_holds`):
`"true"` makes its edge unconditional, `"false"` makes it an edge no run takes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Set
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped,unused-ignore]

from loomgraph.errors import Problem
from loomgraph.graph.conditions import constant_condition
from loomgraph.graph.policies import known_error_type
from loomgraph.graph.spec import END, EdgeSpec, Graph

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
    return Problem(rule, message, graph.read_file, line)


def did_you_mean(name: str, options: Iterable[str], *, ignore_case: bool = False) -> str:
    """A ` (did you mean 'x'?)` hint for a misspelt name, or ''."""
    options = list(options)
    if name.lower() == END.lower() and name != END:
        return f" (did you mean {END}?)"
    if ignore_case and (same := [o for o in options if o.lower() == name.lower()]):
        return f" (did you mean {same[0]!r}?)"
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def quoted(names: Iterable[str]) -> str:
    """Names as a message lists them: `'a', 'b'`, or `none`."""
    return ", ".join(repr(n) for n in names) or "none"


def edge_holds(edge: EdgeSpec) -> bool | None:
    """True for an edge taken whenever it is tried (no `when`, or a constantly true one),
    False for one no run takes (a constantly false `when`), None when the run decides."""
    return True if edge.when is None else constant_condition(edge.when)


def _never_taken(
    graph: Graph, dead: Iterable[int], *, into: str | None = None, leaving: Set[str] = frozenset()
) -> str:
    """A note on the `dead` edges (whose `when` never holds) into a node or leaving a loop."""
    shown = [
        f"{_edge_at(graph, i)} (`when: {graph.edges[i].when!r}`)"
        for i in dead
        if graph.edges[i].target == into
        or (graph.edges[i].source in leaving and graph.edges[i].target not in leaving)
    ]
    if not shown:
        return ""
    return f"; never taken, as its `when` never holds: the edge {', the edge '.join(shown)}"


def _edge_at(graph: Graph, index: int) -> str:
    """Where edge `index` is, for messages: its line, else (no file) its place in `edges`."""
    line = graph.line_of("edges", index)
    return f"on line {line}" if line is not None else f"at edges[{index}]"


def _always(graph: Graph, index: int) -> str:
    """Why edge `index` is taken whenever it is tried (for messages)."""
    when = graph.edges[index].when
    return "has no `when`" if when is None else f"has `when: {when!r}`, which always holds"


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
                f"no `entry:`; name the node the run starts at (nodes: {quoted(graph.nodes)})",
                "entry",
            )
        ]
    if graph.entry not in graph.nodes:
        return [
            problem_at(
                graph,
                "unknown-entry",
                f"entry {graph.entry!r} is not a node{did_you_mean(graph.entry, graph.nodes)}; "
                f"nodes: {quoted(graph.nodes)}",
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
                    f"{did_you_mean(edge.source, graph.nodes)}; nodes: {quoted(graph.nodes)}",
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
                    f"{edge.source!r} to {graph.edges[j].target!r} {_edge_at(graph, j)} "
                    f"{_always(graph, j)}, and edges are tried in "
                    "file order; move this edge above it or remove it",
                    "edges",
                    i,
                )
            )
        elif edge_holds(edge):
            first_default[edge.source] = i
    return problems


def flow_graph(graph: Graph) -> nx.DiGraph:
    """The routes a run can take: node -> node or EXIT, each edge with its file `index`.

    Edges hidden behind an unconditional edge (or a constantly true one) are left out, and so
    are edges whose `when` is constantly false; a node without an unconditional edge also
    gets a fall-through edge to EXIT. Unknown targets (reported as `unknown-endpoint`) count
    as EXIT so that one typo is not reported again as a loop.
    """
    # Imported here: validating a graph is the one thing that needs it (~0.1 s to import).
    import networkx as nx  # type: ignore[import-untyped,unused-ignore]

    flow = nx.DiGraph()
    flow.add_node(EXIT)
    flow.add_nodes_from(graph.nodes)
    closed: set[str] = set()
    for i, edge in enumerate(graph.edges):
        holds = edge_holds(edge)
        if edge.source not in graph.nodes or edge.source in closed or holds is False:
            continue
        target = edge.target if edge.target in graph.nodes and edge.target != END else EXIT
        if not flow.has_edge(edge.source, target) or holds:
            flow.add_edge(edge.source, target, index=i, default=bool(holds))
        if holds:
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
    dead = [i for i, edge in enumerate(graph.edges) if edge_holds(edge) is False]
    order = {name: i for i, name in enumerate(graph.nodes)}
    problems: list[Problem] = []
    if graph.entry in graph.nodes:
        reached = nx.descendants(flow, graph.entry) | {graph.entry}
        problems += [
            problem_at(
                graph,
                "unreachable-node",
                f"node {name!r} is never run: no edge leads to it from the entry {graph.entry!r}"
                + _never_taken(graph, dead, into=name),
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
                "END) before the unconditional one" + _never_taken(graph, dead, leaving=set(loop)),
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
        into = quoted(sorted(ahead, key=order.__getitem__))
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

"""What every diagram of a graph draws, whatever its format, and the run overlay.

A node shows its name, its kind and the state fields it reads and writes; an edge shows its
`when` condition and, when its node has several edges, its position (the first that holds
wins); a node's `on_error` route is an edge of its own kind (dashed, red, labelled
`on_error`). A run overlay adds visit counts, the edges and routes taken and the node where
the run stopped.
The formats are in `render_dot` (Graphviz DOT, SVG) and `render_mermaid`; `render` is the
public entry point.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loomgraph.authoring.secrets import has_secrets, redact, redact_data
from loomgraph.errors import GraphError
from loomgraph.graph.spec import END, EdgeSpec, Graph, NodeSpec
from loomgraph.protocols.paths import top_level
from loomgraph.protocols.usage import Usage


class RenderError(GraphError):
    """A diagram could not be produced: no `dot` binary, `dot` failed, or an unknown format."""


class _Step(Protocol):
    """What the overlay needs from a journal transition (and its `patch`, when it has one:
    an `on_error` route's is only `error`, `routed_on_error`)."""

    @property
    def node(self) -> str: ...

    @property
    def next_node(self) -> str: ...

    @property
    def usage(self) -> Usage: ...


# Statuses drawn orange: the run stopped on purpose or at a cap, it did not break.
_STOPPED = {"limit_reached", "budget_exhausted", "interrupted", "awaiting_approval", "cancelled"}


@dataclass(slots=True)
class RunOverlay:
    """A run's path to draw over its graph: visits per node, edges taken, where it stopped."""

    visits: dict[str, int] = field(default_factory=dict)
    path: list[tuple[str, str]] = field(default_factory=list)
    stopped_at: str | None = None
    status: str = "completed"
    # For the title: which run, why it stopped, what it used.
    run_id: str | None = None
    reason: str = ""
    usage: Usage | None = None
    # The steps of `path` that were `on_error` routes (a failed visit sent to its handler),
    # not edges: drawn on the route, not on an edge between the same nodes.
    on_error: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = [(str(a), str(b)) for a, b in self.path]
        self.on_error = [(str(a), str(b)) for a, b in self.on_error]
        # A path alone is enough: every step taken is a visit of its source node.
        if not self.visits and self.path:
            self.visits = dict(Counter(a for a, _ in self.path))

    @classmethod
    def from_transitions(
        cls,
        transitions: Iterable[_Step],
        *,
        status: str = "completed",
        stopped_at: str | None = None,
        run_id: str | None = None,
        reason: str = "",
    ) -> RunOverlay:
        """An overlay from journal transitions; `stopped_at` defaults to the last target."""
        # Steps inside subgraphs carry qualified names (`plan/model`) and their own END;
        # they are not edges of this graph, so they are left out (a subgraph node's own
        # transition already carries its child's usage).
        top = top_level(transitions)
        steps = [(t.node, t.next_node) for t in top]
        if stopped_at is None and steps:
            stopped_at = steps[-1][1]
        usage = sum((t.usage for t in top), Usage())
        return cls(
            path=steps,
            stopped_at=stopped_at,
            status=str(status),
            run_id=run_id,
            reason=reason,
            usage=usage,
            on_error=[(t.node, t.next_node) for t in top if routed_on_error(t)],
        )

    @classmethod
    def from_record(cls, record: Any, transitions: Iterable[_Step]) -> RunOverlay:
        """An overlay of a journaled run (a `RunRecord` and its transitions), with its title."""
        return cls.from_transitions(
            transitions,
            status=str(getattr(record.status, "value", record.status)),
            run_id=record.run_id,
            reason=record.reason,
        )

    def title(self) -> str:
        """The run's line of the diagram title: id, status, reason, usage and cost."""
        parts = [f"run {self.run_id}" if self.run_id else "run", self.status]
        if self.reason:
            reason = (
                self.reason
                if len(self.reason) <= 80
                else self.reason[:79] + "\N{HORIZONTAL ELLIPSIS}"
            )
            parts.append(reason)
        if self.usage:
            parts.append(
                f"{self.usage.total_tokens:,} tokens ({self.usage.input_tokens:,} in, "
                f"{self.usage.output_tokens:,} out)"
            )
            parts.append(f"${self.usage.cost_usd:.4f}")
        return " \N{MIDDLE DOT} ".join(parts)

    @classmethod
    def coerce(cls, run: RunOverlay | Mapping[str, Any] | None) -> RunOverlay | None:
        """An overlay from an overlay, a mapping of its fields, or None."""
        if run is None or isinstance(run, RunOverlay):
            return run
        known = {"visits", "path", "stopped_at", "status", "run_id", "reason", "usage", "on_error"}
        unknown = set(run) - known
        if unknown:
            raise RenderError(
                f"unknown run overlay keys: {', '.join(sorted(unknown))}; "
                f"expected {', '.join(sorted(known))}"
            )
        usage = run.get("usage")
        return cls(
            visits=dict(run.get("visits") or {}),
            path=list(run.get("path") or []),
            stopped_at=run.get("stopped_at"),
            status=str(run.get("status", "completed")),
            run_id=run.get("run_id"),
            reason=str(run.get("reason") or ""),
            usage=Usage.from_dict(usage) if isinstance(usage, Mapping) else usage,
            on_error=list(run.get("on_error") or []),
        )

    def taken(self) -> Counter[tuple[str, str]]:
        """How many times each (from, to) step was taken, edges and `on_error` routes alike."""
        return Counter(self.path)

    def taken_in(self, graph: Graph) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """How many times each (from, to) edge, and each `on_error` route, of `graph` was
        taken. A step is a route when the journal says so (`on_error`), or when it can be
        nothing else: no edge of the graph joins its nodes, but its node's `on_error` does
        (an overlay given as a bare `path`)."""
        routes = Counter(self.on_error) & self.taken()
        edges = self.taken() - routes
        joined = {(e.source, e.target) for e in graph.edges}
        for (source, target), times in list(edges.items()):
            spec = graph.nodes.get(source)
            if (source, target) not in joined and spec is not None and spec.on_error == target:
                routes[(source, target)] += times
                del edges[(source, target)]
        return edges, routes

    def stop_colour(self) -> str | None:
        """The highlight colour of the node where the run stopped, if it is highlighted."""
        if self.stopped_at is None or self.status in ("queued", "running"):
            return None
        if self.status == "failed":
            return "#dc2626"
        if self.status == "completed":
            return "#16a34a"
        return "#ea580c"  # any other stop (limits, budget, interrupts) is a deliberate halt


def routed_on_error(step: _Step) -> bool:
    """Whether a journal transition is an `on_error` route: its node failed and the run went
    to the node's handler. That visit's patch is only the `error` field, naming the node."""
    patch = getattr(step, "patch", None)
    if not isinstance(patch, Mapping) or set(patch) != {"error"}:
        return False
    error = patch["error"]
    return isinstance(error, Mapping) and error.get("node") == step.node


RunLike = RunOverlay | Mapping[str, Any] | None

VISITED_FILL = "#dbeafe"
STOP_FILL = {"#dc2626": "#fee2e2", "#16a34a": "#dcfce7", "#ea580c": "#ffedd5"}
CONDITIONAL = "#2563eb"
TAKEN = "#1d4ed8"
ON_ERROR = "#dc2626"
ON_ERROR_LABEL = "on_error"
TIMES = "\N{MULTIPLICATION SIGN}"


# --------------------------------------------------------------------------- shared model


@dataclass(slots=True)
class Edge:
    """An edge as drawn: its spec, its position among its node's edges, whether it is `else`."""

    spec: EdgeSpec
    order: int | None  # 1-based position among its node's edges, when there are several
    is_else: bool  # an unconditioned edge of a node that also has conditional ones


def node_io(graph: Graph) -> dict[str, tuple[list[str], list[str]]]:
    """Reads and writes per node, with the kinds' defaults filled in."""
    from loomgraph.graph.compiled import compile_graph
    from loomgraph.graph.registry import node_kind

    try:
        nodes = compile_graph(graph).nodes
        return {name: (n.reads(), n.writes()) for name, n in nodes.items()}
    except Exception:
        pass  # a broken graph is still worth drawing while it is edited; validation reports it
    out: dict[str, tuple[list[str], list[str]]] = {}
    for name, spec in graph.nodes.items():
        try:
            kind = node_kind(spec.kind)
            defaults = (list(kind.default_reads), list(kind.default_writes))
        except GraphError:
            defaults = ([], [])
        out[name] = (
            spec.reads if spec.reads is not None else defaults[0],
            spec.writes if spec.writes is not None else defaults[1],
        )
    return out


def edges_of(graph: Graph) -> list[Edge]:
    """The edges in file order, with their order numbers and `else` flags."""
    by_source: dict[str, list[EdgeSpec]] = {}
    for edge in graph.edges:
        by_source.setdefault(edge.source, []).append(edge)
    conditional = {source: any(e.when for e in edges) for source, edges in by_source.items()}
    seen: Counter[str] = Counter()
    out = []
    for edge in graph.edges:
        # Counted per edge: two identical edges (a harmless duplicate) get their own numbers.
        seen[edge.source] += 1
        order = seen[edge.source] if len(by_source[edge.source]) > 1 else None
        out.append(Edge(edge, order, edge.when is None and conditional[edge.source]))
    return out


def error_routes(graph: Graph) -> list[tuple[str, str]]:
    """Each node's `on_error` route, (node, handler), in node order: where a visit that
    failed (after its retries) goes, with the failure in `error`."""
    return [(name, spec.on_error) for name, spec in graph.nodes.items() if spec.on_error]


def back_edges(graph: Graph) -> set[int]:
    """File indexes of the edges that lead back to a node on the way to them (the loops'
    return edges), found depth first from the entry in file order: drawn to the side, so
    they do not lie on top of the edge they return along."""
    outgoing: dict[str, list[tuple[int, str]]] = {}
    for i, edge in enumerate(graph.edges):
        if edge.target != END and edge.target in graph.nodes:
            outgoing.setdefault(edge.source, []).append((i, edge.target))
    out: set[int] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    # An explicit stack (node, its next edge to look at): a chain of thousands of nodes
    # is as deep as it is long, too deep for recursion.
    for start in [graph.entry, *graph.nodes]:
        if start not in graph.nodes or start in state:
            continue
        state[start] = 1
        stack = [(start, 0)]
        while stack:
            node, at = stack[-1]
            edges = outgoing.get(node, [])
            if at == len(edges):
                state[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, at + 1)
            i, target = edges[at]
            if state.get(target) == 1:
                out.add(i)
            elif target not in state:
                state[target] = 1
                stack.append((target, 0))
    return out


def node_detail(spec: NodeSpec) -> str | None:
    """What a node runs, for kinds that run another graph: `map` and `subgraph`."""
    params = spec.params
    if spec.kind == "map" and params.get("graph"):
        each = params.get("over", "?")
        return f"for each of {each} \N{RIGHTWARDS ARROW} {params['graph']}"
    if spec.kind == "subgraph" and params.get("graph"):
        return f"runs {params['graph']}"
    return None


LEGEND = (
    ("visited node (visits: n)", VISITED_FILL),
    ("edge taken \N{MULTIPLICATION SIGN}n", TAKEN),
    ("condition ([n] = order tried)", CONDITIONAL),
)
# In the legend of a graph that has `on_error` routes.
ON_ERROR_LEGEND = ("on_error route (a failed visit's handler)", ON_ERROR)


def edge_text(edge: Edge) -> str:
    """An edge's label: its position among its node's edges, then its condition or `else`."""
    cond = edge.spec.when or ("else" if edge.is_else else "")
    prefix = f"[{edge.order}] " if edge.order is not None else ""
    return f"{prefix}{cond}".strip()


def wrap(fields: Sequence[str], per_line: int = 3) -> list[str]:
    """Field names a few per line, so a node with many fields stays narrow."""
    if not fields:
        return ["—"]
    return [", ".join(fields[i : i + per_line]) for i in range(0, len(fields), per_line)]


def load(graph: Graph | str | Path) -> Graph:
    """The graph, loaded if named, as a diagram may show it (`shown`); every public
    function starts here."""
    # Node kinds (built-in ones too) come from the registry, which loads the `loomgraph.nodes`
    # entry points on the first lookup: nothing here imports the node kinds.
    from loomgraph.authoring.library import load_graph

    return shown(graph if isinstance(graph, Graph) else load_graph(graph))


def shown(graph: Graph) -> Graph:
    """The graph with every value substituted from `${ENV}` in this process (an agent
    file's secrets: `authoring.secrets`) replaced by `***` in all of its texts, so no
    format draws one, escaped or not; the graph itself when there is nothing to hide."""
    if not has_secrets():
        return graph
    data = graph.to_data()
    clean = redact_data(data)
    if clean == data:
        return graph
    try:
        copy = Graph.model_validate(clean)
    except ValueError as err:
        raise RenderError(
            f"cannot draw graph {redact(graph.name)!r} without a secret substituted into it"
        ) from err
    copy._source, copy._lines, copy._resolver = graph._source, graph._lines, graph._resolver
    return copy

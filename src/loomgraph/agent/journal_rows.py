"""A run's journaled rows checked against its graph as they are read (`JournalRows`): a row
the graph could not have written is damage, found before anything goes on from it."""

from __future__ import annotations

from typing import Any

from loomgraph.errors import StateError
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.spec import END
from loomgraph.nodes.structured import FINISH_NODE
from loomgraph.nodes.subgraph import ChildGraphNode
from loomgraph.protocols import RunRecord, Transition
from loomgraph.protocols.paths import NodePath
from loomgraph.runtime.errors import JournalCorrupted

__all__ = ["JournalRows"]


class JournalRows:
    """The checks of a run's journaled rows against its graph, as they are read: a row
    naming a node the graph has not, a patch or snapshot of a field it has not, or of a
    shape no node writes, is damage (`JournalCorrupted` naming the run and the row), found
    before anything goes on from it. A graph that surely is not the run's (one running no
    child graph, whose journal hash is then its content hash, of another hash: a run older
    than kept graphs read with today's, `runs show --any-graph`) is not held against its
    names and fields: what it lacks is a change of the graph (`pinning.check_move`)."""

    __slots__ = ("graph", "run", "theirs")

    def __init__(self, graph: CompiledGraph, run: RunRecord) -> None:
        self.graph, self.run = graph, run
        self.theirs = run.graph_hash == graph.hash or any(
            isinstance(node, ChildGraphNode) for node in graph.nodes.values()
        )

    def damaged(self, where: str, problem: str) -> JournalCorrupted:
        """The error naming the run, the row and what is wrong with it."""
        return JournalCorrupted(f"of run {self.run.run_id}", f"{where} {problem}")

    def names(self, t: Transition) -> None:
        """The nodes a transition names (of a child graph's: the node that ran it)."""
        where, nodes = f"transition {t.seq}", self.graph.nodes
        if type(t.visit) is not int or t.visit < 1:
            raise self.damaged(where, f"has visit {t.visit!r}, not a count from 1")
        if not self.theirs:
            return
        path = NodePath.parse(t.node)
        if not path.is_top_level:
            if path.parts[0] not in nodes:
                raise self.damaged(where, f"names {self._lacks(path.parts[0])} ({t.node!r})")
            return
        # A structured answer's step runs after the graph ended: a node of no graph.
        finish = t.node == FINISH_NODE and t.next_node == END
        if t.node not in nodes and not finish:
            raise self.damaged(where, f"names {self._lacks(t.node)}")
        if t.next_node != END and t.next_node not in nodes:
            raise self.damaged(where, f"goes on at {self._lacks(t.next_node)}")

    def start(self, node: str, visits: dict[str, int]) -> None:
        """Where a run without transitions starts (a fork's start, kept with its record)."""
        known = {*self.graph.nodes, FINISH_NODE}
        wrong = sorted({node} - {END, *known} | visits.keys() - known)
        if self.theirs and wrong:
            raise self.damaged("its start", f"names {self._lacks(wrong[0])}")

    def _lacks(self, node: str) -> str:
        return f"node {node!r}, which its graph {self.graph.name!r} has not"

    def state(self, seq: int, values: dict[str, Any], *, whole: bool) -> None:
        """A patch (or with `whole`, a snapshot) of transition `seq`: fields of the graph,
        and the built-in ones of the shapes the framework writes."""
        where = f"transition {seq}'s {'snapshot' if whole else 'patch'}:"
        for name, value in values.items():
            if self.theirs and name not in self.graph.schema.fields:
                raise self.damaged(where, f"field {name!r}, which its graph has not")
            own = name in self.graph.graph.state  # (a graph built unvalidated may redeclare)
            problem = None if own else _shape_problem(name, value, whole)
            if problem is not None:
                raise self.damaged(where, f"field {name!r} holds {problem}")

    def apply(self, state: dict[str, Any], t: Transition) -> None:
        """Apply a top-level transition's patch, checked; a reducer refusing it is damage."""
        self.state(t.seq, t.patch, whole=False)
        try:
            self.graph.schema.apply(state, t.patch)
        except StateError as err:
            if not self.theirs:
                raise
            raise self.damaged(f"transition {t.seq}'s patch", f"cannot be applied: {err}") from None


def _shape_problem(name: str, value: Any, whole: bool) -> str | None:
    """What a built-in field's journaled value holds that the framework never writes (a
    patch's `messages` may be one message), or None."""
    if name == "messages":
        items = value if isinstance(value, list) else None if whole else [value]
        if items is None or not all(isinstance(m, dict) for m in items):
            return f"{type(value).__name__} {value!r:.40}, not messages"
    elif name == "input" and not isinstance(value, str):
        return f"{type(value).__name__}, not text"
    elif name == "usage" and not (
        isinstance(value, dict) and all(isinstance(n, int | float) for n in value.values())
    ):
        return f"{value!r:.40}, not counts"
    elif name == "error" and not (value is None or isinstance(value, dict)):
        return f"{type(value).__name__}, not a routed failure"
    return None

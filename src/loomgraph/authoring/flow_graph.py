"""The directed graph graph validation walks: nodes, edges with data, reachability and
strongly connected components.

Graphs are small (tens of nodes), and validation runs when an agent is built, so this is a
few dozen lines of plain Python rather than a graph library that costs ~150 ms to import.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

Edge = tuple[Hashable, Hashable, dict[str, Any]]


class FlowGraph:
    """A directed graph without parallel edges; each edge carries a dict of data."""

    def __init__(self) -> None:
        # Insertion-ordered, so every walk is deterministic.
        self._succ: dict[Hashable, dict[Hashable, dict[str, Any]]] = {}
        self._pred: dict[Hashable, dict[Hashable, None]] = {}

    def add_node(self, node: Hashable) -> None:
        """Add a node (nothing happens when it is there already)."""
        self._succ.setdefault(node, {})
        self._pred.setdefault(node, {})

    def add_nodes_from(self, nodes: Iterable[Hashable]) -> None:
        """Add several nodes."""
        for node in nodes:
            self.add_node(node)

    def add_edge(self, source: Hashable, target: Hashable, **data: Any) -> None:
        """Add an edge (and its nodes); an edge there already has its data updated."""
        self.add_node(source)
        self.add_node(target)
        self._succ[source].setdefault(target, {}).update(data)
        self._pred[target][source] = None

    def has_edge(self, source: Hashable, target: Hashable) -> bool:
        """Whether the edge exists."""
        return target in self._succ.get(source, {})

    def successors(self, node: Hashable) -> Iterator[Hashable]:
        """The targets of a node's edges."""
        return iter(self._succ[node])

    def out_edges(self, nodes: Iterable[Hashable]) -> Iterator[Edge]:
        """The edges leaving any of `nodes`, as (source, target, data)."""
        for source in nodes:
            for target, data in self._succ[source].items():
                yield source, target, data

    def descendants(self, node: Hashable) -> set[Hashable]:
        """Every node reachable from `node`, `node` itself left out."""
        return _reach(node, self._succ)

    def ancestors(self, node: Hashable) -> set[Hashable]:
        """Every node from which `node` is reachable, `node` itself left out."""
        return _reach(node, self._pred)

    def strongly_connected_components(self) -> list[set[Hashable]]:
        """The strongly connected components (Tarjan's algorithm, without recursion)."""
        index: dict[Hashable, int] = {}
        low: dict[Hashable, int] = {}
        on_stack: set[Hashable] = set()
        stack: list[Hashable] = []
        components: list[set[Hashable]] = []
        for root in self._succ:
            if root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            work: list[tuple[Hashable, Iterator[Hashable]]] = [(root, iter(self._succ[root]))]
            while work:
                node, targets = work[-1]
                for target in targets:
                    if target not in index:
                        index[target] = low[target] = len(index)
                        stack.append(target)
                        on_stack.add(target)
                        work.append((target, iter(self._succ[target])))
                        break
                    if target in on_stack:
                        low[node] = min(low[node], index[target])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        component: set[Hashable] = set()
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.add(member)
                            if member == node:
                                break
                        components.append(component)
        return components


def _reach(start: Hashable, edges: dict[Hashable, Any]) -> set[Hashable]:
    seen: set[Hashable] = {start}
    todo = list(edges[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    seen.discard(start)
    return seen

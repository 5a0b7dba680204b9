"""A graph file that fails its schema, checked past that: what failed (a top-level key, a
node, an edge) is left out, and the rest is validated as usual (`loader.beyond_schema`), so
`loomgraph validate` reports every problem at once, not only the schema's.

A rule that reads more of the graph than the part it reports on is not reported when what it
reads was left out (`_RULE_READS`): what it would say is not known.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from loomgraph.protocols.safe_yaml import Lines

__all__ = ["Partial", "without_failures"]


@dataclass(frozen=True, slots=True)
class Partial:
    """A graph's data with what failed its schema left out."""

    data: dict[str, Any]
    left_out: frozenset[str]  # parts, as `_RULE_READS` names them
    dropped: frozenset[int]  # indexes of the edges left out

    def knows(self, rule: str) -> bool:
        """Whether what `rule` would report can be known with the parts left out."""
        return not (_RULE_READS.get(rule, frozenset()) & self.left_out)

    def renumbered(self, lines: Lines) -> dict[tuple[str | int, ...], int]:
        """The file's line map for `data` (edges after dropped ones renumbered)."""
        return _edges_renumbered(lines, self.dropped)


# What a schema problem can leave out of a graph, and the rules that read
# more of it than the part they report on, with what they read: with that left out, what
# the rule would say is not known, so it is not reported. `nodes`: some node (what it writes
# is not known); `node-names`: the whole `nodes:` (which names are nodes is not known);
# `state`: the whole `state:` (a field that failed alone is kept, typed `any`).
_PARTS = ("state", "entry", "nodes", "edges")
_RULE_READS: dict[str, set[str]] = {
    "undefined-read": {"state", "nodes", "node-names"},
    "undeclared-write": {"state"},
    "no-nodes": {"nodes", "node-names"},
    "missing-entry": {"entry"},
    "unknown-entry": {"entry", "node-names"},
    "unknown-endpoint": {"node-names"},
    "unreachable-node": {"entry", "nodes", "edges", "node-names"},
    "cycle-without-exit": {"entry", "nodes", "edges", "node-names"},
    "no-path-to-end": {"entry", "nodes", "edges", "node-names"},
}
_PLACEHOLDER_NAME = "graph"


def without_failures(data: Mapping[str, Any], err: ValidationError, keys: list[str]) -> Partial:
    """The graph's data without the parts that failed the schema; what was left out (a
    misspelt top-level key counts for the key of `keys` it is closest to, when that one is
    missing: `entrypoint` for `entry`), and the edges dropped: those that failed, and those
    to or from a node that failed."""
    partial: dict[Any, Any] = dict(data)
    left_out: set[str] = set()
    dropped: set[int] = set()
    failed_nodes: set[Any] = set()
    for e in err.errors():
        loc = tuple(e["loc"])
        top = loc[0] if loc else None
        inside = partial.get(top) if top in _PARTS else None
        if len(loc) >= 2 and top == "state" and isinstance(inside, dict) and loc[1] in inside:
            partial["state"] = {**inside, loc[1]: {"type": "any"}}
        elif len(loc) >= 2 and top == "nodes" and isinstance(inside, dict):
            if loc[1] in inside:
                partial["nodes"] = _node_left_out(inside, loc, failed_nodes)
            left_out.add("nodes")  # (a second error of a node left out already: nothing more)
        elif len(loc) >= 2 and top == "edges" and isinstance(loc[1], int):
            dropped.add(loc[1])
            left_out.add("edges")
        else:
            partial.pop(top, None)
            if top in _PARTS:
                left_out.add({"nodes": "node-names"}.get(str(top), str(top)))
            elif e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(top), keys, n=1)
                if close and close[0] not in data:
                    left_out.add({"nodes": "node-names"}.get(close[0], close[0]))
    if failed_nodes:
        _unlink(partial, failed_nodes, dropped, left_out)
    if isinstance(partial.get("edges"), list):
        partial["edges"] = [edge for i, edge in enumerate(partial["edges"]) if i not in dropped]
    if not isinstance(partial.get("name"), str):
        partial["name"] = _PLACEHOLDER_NAME
    return Partial(partial, frozenset(left_out), frozenset(dropped))


def _node_left_out(nodes: dict[Any, Any], loc: tuple[Any, ...], failed: set[Any]) -> dict[Any, Any]:
    """`nodes` with what failed at `loc` left out: only the node's field that failed, so the
    node keeps its name, edges and other keys for the other rules (an entry's typo still
    finds it, a misspelt param is still reported); the whole node (added to `failed`) when
    it is no mapping or its `kind` failed."""
    name, spec = loc[1], nodes[loc[1]]
    if len(loc) >= 3 and loc[2] != "kind" and isinstance(spec, dict):
        return {**nodes, name: {k: v for k, v in spec.items() if k != loc[2]}}
    failed.add(name)
    return {k: v for k, v in nodes.items() if k != name}


def _unlink(
    partial: dict[Any, Any], failed: set[Any], dropped: set[int], left_out: set[str]
) -> None:
    """Take out what names a node that failed, as if it were no node: the edges to and from
    it, the `on_error` routes to it, the entry."""

    def names_failed(value: Any) -> bool:
        return isinstance(value, str) and value in failed

    edges = partial.get("edges")
    for i, edge in enumerate(edges if isinstance(edges, list) else ()):
        if isinstance(edge, dict) and (
            names_failed(edge.get("from")) or names_failed(edge.get("to"))
        ):
            dropped.add(i)
            left_out.add("edges")
    nodes = partial.get("nodes")
    if isinstance(nodes, dict):
        partial["nodes"] = {
            name: {k: v for k, v in spec.items() if k != "on_error"}
            if isinstance(spec, dict) and names_failed(spec.get("on_error"))
            else spec
            for name, spec in nodes.items()
        }
    if names_failed(partial.get("entry")):
        partial.pop("entry")
        left_out.add("entry")


def _edges_renumbered(lines: Lines, dropped: frozenset[int]) -> dict[tuple[str | int, ...], int]:
    """The line map with the edges after dropped ones renumbered, as the list without them
    numbers them, so a problem of an edge is still reported at its own line."""
    if not dropped:
        return dict(lines)
    out: dict[tuple[str | int, ...], int] = {}
    for path, line in lines.items():
        if len(path) >= 2 and path[0] == "edges" and isinstance(path[1], int):
            if path[1] in dropped:
                continue
            path = ("edges", path[1] - sum(1 for i in dropped if i < path[1]), *path[2:])
        out[path] = line
    return out

"""loomgraph-debate: a `vote` node kind (self-consistency) and a graph that uses it.

Installing the package is all it takes: loomgraph finds `kind: vote` through the
`loomgraph.nodes` entry point, so nothing needs to import this package first.
"""

from __future__ import annotations

from pathlib import Path

from loomgraph_debate.vote import VoteNode, VoteParams

__all__ = ["GRAPHS", "VoteNode", "VoteParams", "graph_path"]

# The graph files shipped with the package (in a source checkout: the folder next to `src`).
GRAPHS = next(
    (
        p
        for p in (Path(__file__).parent / "graphs", Path(__file__).resolve().parents[2] / "graphs")
        if p.is_dir()
    ),
    Path(__file__).parent / "graphs",
)


def graph_path(name: str = "self_consistency") -> Path:
    """The path of a graph file shipped with this package, for `Agent(architecture=...)`."""
    return GRAPHS / f"{name}.yaml"

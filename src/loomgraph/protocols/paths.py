"""`NodePath`: where a node sits in a run — its name, under the nodes that ran its graph;
`top_level`: a run's own steps among its journaled ones; `journaled_usage`: what they used."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

from loomgraph.protocols.usage import Usage

__all__ = ["NodePath", "journaled_usage", "top_level"]


@dataclass(frozen=True, slots=True)
class NodePath:
    """A node's place in a run: `("model",)` at the top, `("plan", "execute", "model")` inside
    subgraphs, with a branch index where one node runs its graph several times (`map`).

    Journals, events and the audit log carry it as text, `plan/execute/model`.
    """

    SEPARATOR: ClassVar[str] = "/"

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> NodePath:
        """The path a journaled node name stands for."""
        return cls(tuple(text.split(cls.SEPARATOR)))

    @property
    def is_top_level(self) -> bool:
        """True for a node of the run's own graph, not of a subgraph."""
        return len(self.parts) == 1

    @property
    def name(self) -> str:
        """The node's own name, without the nodes above it."""
        return self.parts[-1]

    def child(self, *names: str) -> NodePath:
        """The path of a node (or branch) below this one."""
        return NodePath((*self.parts, *names))

    def __str__(self) -> str:
        return self.SEPARATOR.join(self.parts)


class _Named(Protocol):
    @property
    def node(self) -> str: ...


class _Used(_Named, Protocol):
    @property
    def usage(self) -> Usage: ...


_S = TypeVar("_S", bound=_Named)


def top_level(steps: Iterable[_S]) -> list[_S]:
    """The steps of the run's own graph: a `subgraph` or `map` node's step already carries
    what its child graphs' steps used, so summing those too would count them twice."""
    return [s for s in steps if NodePath.SEPARATOR not in s.node]


def journaled_usage(steps: Iterable[_Used]) -> Usage:
    """What a run's journaled steps (in seq order) used: each step once, a child graph's steps
    only while no step of the node that ran them came after them (a run stopped or cut off
    inside a `map` or `subgraph` node; once that node's step is journaled, it carries them)."""
    total, covering = Usage(), set[str]()
    for step in reversed(list(steps)):
        parts = step.node.split(NodePath.SEPARATOR)
        if not any(NodePath.SEPARATOR.join(parts[:i]) in covering for i in range(1, len(parts))):
            total += step.usage
        covering.add(step.node)
    return total

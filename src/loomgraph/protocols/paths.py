"""`NodePath`: where a node sits in a run — its name, under the nodes that ran its graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["NodePath"]


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

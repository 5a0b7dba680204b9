"""`visits` in edge conditions: how often each node ran so far, 0 for a node not run yet."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

# The name conditions read the visit counts under (`visits.replan < 3`).
VISITS = "visits"


class VisitCounts(Mapping[str, int]):
    """A read-only view of a run's visit counts in which a node not visited yet counts 0.

    Used only where a condition runs as Jinja's compiled expression; conditions compiled to
    closures read the plain dict (`condition_code.compile_native(counts=...)`). A view, not
    a copy: no dict is built per evaluation.
    """

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = counts

    def __getitem__(self, node: str) -> int:
        return self._counts.get(node, 0)

    def __contains__(self, node: object) -> bool:
        return node in self._counts

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

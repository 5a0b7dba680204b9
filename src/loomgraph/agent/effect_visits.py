"""Which journaled transition each effect of a run belongs to, for the events derived from
the journal (`loomgraph.agent.run_events`).

An effect's key names the node visit that made it with the visit of every node it ran under
(`run:each.2/0/tools:1:1`: visit 1 of `tools`, in branch 0 of the second visit of `each`),
while the visit's transition names only the node and its own visit (`each/0/tools`, 1). The
enclosing visits of a transition are therefore worked out from the transitions before it, in
seq order (`VisitWalk`): a node's k-th transition comes after every transition of the child
graphs it ran in that visit, so its children's transitions until then are in its visit
`k`. A child graph run again from its entry (a stop or a crash inside it, then a resume)
journals its transitions again, with the same keys: one that comes back with a visit no
higher than the last one of its node starts such a run again. Two child graphs down, one
such run is seen late: stopped in a later visit of a nested node before that visit journaled
anything, its first transitions journaled again are taken for that later visit until the
node's own transition comes again (the journal does not say where a resume began).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from loomgraph.protocols import EffectRecord, Transition
from loomgraph.protocols.paths import NodePath

__all__ = ["VisitEffects", "VisitWalk", "visit_of"]

_SEP = NodePath.SEPARATOR


class VisitWalk:
    """The visits of the nodes enclosing each transition of a run, fed its transitions once
    each, in seq order (a follower keeps one across its reads)."""

    __slots__ = ("_last",)

    def __init__(self, visits: Mapping[str, int] | None = None) -> None:
        # The last journaled visit of each node (qualified name) in its current child run;
        # a fork starts with the top-level visits its checkpoint had counted.
        self._last: dict[str, int] = dict(visits or {})

    def step(self, transition: Transition) -> tuple[int, ...]:
        """The visit of each node above `transition`'s (outermost first), then take it in.

        A segment of the path that is a branch (`0` in `each/0/tools`) gets a number too,
        which nothing compares: the effect's key tells branches from nodes."""
        node, visit = transition.node, transition.visit
        parts = node.split(_SEP)
        prefixes = [_SEP.join(parts[: i + 1]) for i in range(len(parts) - 1)]
        enclosing = tuple(self._last.get(p, 0) + 1 for p in prefixes)
        if prefixes and visit <= self._last.get(node, 0):
            # Within one run of a child graph a node's visits only go up: this one ran again
            # from the entry (a resume), so its siblings start counting again too.
            self._forget(prefixes[-1] + _SEP)
        # This visit's child runs are over: the node's next visit runs them anew from 1.
        self._forget(node + _SEP)
        self._last[node] = visit
        return enclosing

    def _forget(self, prefix: str) -> None:
        for name in [n for n in self._last if n.startswith(prefix)]:
            del self._last[name]


def visit_of(run_id: str, key: str) -> tuple[str, int] | None:
    """The node path and visit an effect key of `run_id` names (`run:path:visit:slot`); None
    for a key no node visit made (the run's own effects, an owed episode)."""
    prefix = run_id + ":"
    if not key.startswith(prefix):
        return None
    path, _, rest = key[len(prefix) :].partition(":")
    visit, _, _slot = rest.partition(":")
    return (path, int(visit)) if visit.isdigit() else None


class VisitEffects:
    """A run's effects, found by the transition of the node visit that made them."""

    __slots__ = ("_by_leaf",)

    def __init__(self, run_id: str, effects: Sequence[EffectRecord]) -> None:
        # Indexed by what a key and its transition share: the node's own name, its visit and
        # the depth; the enclosing visits are compared per transition (`of`).
        self._by_leaf: dict[tuple[str, int, int], list[tuple[list[str], EffectRecord]]] = {}
        for effect in effects:
            made = visit_of(run_id, effect.key)
            if made is None:
                continue
            path, visit = made
            parts = path.split(_SEP)
            slot = (parts[-1], visit, len(parts))
            self._by_leaf.setdefault(slot, []).append((parts, effect))

    def of(self, transition: Transition, enclosing: Sequence[int]) -> list[EffectRecord]:
        """The effects of the visit `transition` journaled, in the order they began, given
        the visits of the nodes above it (`VisitWalk.step`)."""
        parts = transition.node.split(_SEP)
        found = self._by_leaf.get((parts[-1], transition.visit, len(parts)), ())
        return [effect for key, effect in found if _same_visit(key, parts, enclosing)]


def _same_visit(key: list[str], parts: list[str], enclosing: Sequence[int]) -> bool:
    """Whether an effect key's path (`each.2/0/tools`) is the node path `parts` under the
    visits `enclosing`: each segment above the node is a branch, the same in both, or a node
    with its visit (`each.2`)."""
    for i, (mine, theirs) in enumerate(zip(key[:-1], parts[:-1], strict=True)):
        if mine != theirs and mine != f"{theirs}.{enclosing[i]}":
            return False
    return True

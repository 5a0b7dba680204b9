"""The budget holds of child visits that ended without a transition: kept until the visit
above them says whether they will be done again.

A child visit (a `map` branch's, a `subgraph` node's) that stops the run, is cut off by the
cancel of its task or by an outage, does not know whether it will be done again: the run
may stop or be cut off there (the resume does it again, and charges it: its hold is given
back, or left for `begin_run` to give back), or the visit above it may go on without it (a
map's `timeout` or `retry`, a sibling's failure that overtakes the stop, a node of the
user's own that catches it): then it ran for nothing the run will redo, and is charged.
So it keeps its hold here, in `RunScope.cut_visits`, and the first visit above it that
ends decides: one that ends in a transition, fails or is refused by a cap charges the cut
visits below it; a top visit that stops the run gives them back, one cut off leaves them.
"""

from __future__ import annotations

from loomgraph.engine.scope import RunScope
from loomgraph.engine.visits import NO_USAGE
from loomgraph.protocols import Reservation
from loomgraph.protocols.paths import NodePath

__all__ = ["charge_cut", "keep_cut", "leave_cut", "release_cut"]


def keep_cut(scope: RunScope, qualified: str, held: Reservation | None) -> None:
    """Keep the hold of child visit `qualified`, which ended without a transition."""
    if held is not None:
        scope.cut_visits.append((qualified, held))


async def charge_cut(scope: RunScope, qualified: str) -> None:
    """Charge the cut visits below visit `qualified`, which ended without stopping the run:
    they ran, and the run goes on without doing them again."""
    below = qualified + NodePath.SEPARATOR
    cut = [held for path, held in scope.cut_visits if path.startswith(below)]
    if cut:
        scope.cut_visits = [(p, held) for p, held in scope.cut_visits if not p.startswith(below)]
        for held in cut:
            await scope.settle(held, NO_USAGE)


async def release_cut(scope: RunScope) -> None:
    """The run stops: its resume does the cut visits again; their holds are given back."""
    cut, scope.cut_visits = scope.cut_visits, []
    for _, held in cut:
        await scope.release(held)


def leave_cut(scope: RunScope) -> None:
    """The run is cut off: the cut visits' holds are left, as a crash leaves them
    (`begin_run` gives them back, or the run's end)."""
    scope.cut_visits = []

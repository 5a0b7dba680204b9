"""A run's wall clock as a budget keeps it: its start and absolute deadline.

The deadline is `start + wall_clock_s` (the smallest cap that applies, global or the
user's). It is recorded in the ledger when the run begins (`Ledger.run_clock`: the first
record wins, so a resume keeps the deadline) and checked before every reservation; a
reservation at or after it is refused naming the cap — `run:wall_clock_s` when the budget
has no wall-clock cap now and the deadline is one the run was begun with. The clocks of
the runs a budget has begun are kept in one `RunClocks`, which the budget's bound copies
share.
"""

from __future__ import annotations

from collections.abc import Callable

from loomgraph.governance.caps import BudgetConfig, BudgetWarning
from loomgraph.governance.ledger import Ledger
from loomgraph.protocols import BudgetExceeded, BudgetScope
from loomgraph.protocols.governance import KEPT_DEADLINE

__all__ = ["RunClocks"]


class RunClocks:
    """The (start, deadline) of every run begun through one budget, by run id."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.runs: dict[str, tuple[float, float | None]] = {}

    async def start(
        self,
        ledger: Ledger,
        config: BudgetConfig,
        scope: BudgetScope,
        started_at: float | None,
        deadline: float | None,
    ) -> float | None:
        """Start (or take up again) a run's clock; its deadline (None without a cap)."""
        start = self.now() if started_at is None else started_at
        if deadline is None:
            deadline = config.deadline_for(start, scope.user_id)
        if deadline is None:
            self.runs[scope.run_id] = (start, None)
            return None
        self.runs[scope.run_id] = await ledger.run_clock(scope.run_id, start, deadline)
        return self.runs[scope.run_id][1]

    async def check(
        self, ledger: Ledger, config: BudgetConfig, scope: BudgetScope
    ) -> BudgetWarning | None:
        """Raise BudgetExceeded when the run is at or past its deadline; the warning due
        when `warn_at` of its time has passed (None otherwise)."""
        binding = config.wall_clock_cap(scope.user_id)
        if binding is None:
            # No cap of this budget's: a deadline the run was begun with still holds (kept
            # from caps it started under, resumed with `override_policy`).
            kept = self.runs.get(scope.run_id)
            if kept is None or kept[1] is None:
                return None
            binding = (KEPT_DEADLINE, kept[1] - kept[0])
        if scope.run_id not in self.runs:
            # Not begun explicitly: start the clock now (holds of the run are left alone,
            # since this run may be making them right now).
            await self.start(ledger, config, scope, None, None)
        start, deadline = self.runs[scope.run_id]
        if deadline is None:
            return None
        now = self.now()
        cap = binding[0]
        if now >= deadline:
            # What the cap allows, not deadline - start: a run taken up again without its
            # start (the ledger forgot it, none was passed) starts its clock at the resume.
            allowed = (
                "the deadline it started with"
                if cap == KEPT_DEADLINE
                else f"{binding[1]:g}s allowed by {cap}"
            )
            raise BudgetExceeded(
                cap,
                f"run {scope.run_id!r} passed its deadline {now - deadline:.1f}s ago ({allowed})",
            )
        warn_at = config.warn_at
        if warn_at is not None and deadline > start and now - start >= warn_at * (deadline - start):
            return BudgetWarning(
                cap, (now - start) / (deadline - start), scope.run_id, scope.user_id
            )
        return None

    def seconds_left(self, run_id: str) -> float | None:
        """The time until the run's deadline (None without one, or before its clock began)."""
        deadline = self.runs.get(run_id, (0.0, None))[1]
        return None if deadline is None else deadline - self.now()

    def wait_bound(self, run_id: str, wait: float) -> float:
        """How long a reservation may wait for holds: `wait` seconds, within the deadline."""
        left = self.seconds_left(run_id)
        return wait if left is None else min(wait, left)

    def forget(self, run_id: str) -> bool:
        """Drop a finished run's clock; whether it had a deadline."""
        return self.runs.pop(run_id, (0.0, None))[1] is not None

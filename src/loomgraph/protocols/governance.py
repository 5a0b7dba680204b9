"""Governance: budgets and their reservations, permission decisions, and hooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.messages import ToolCall, ToolResult, ToolSpec
from loomgraph.protocols.usage import Usage

__all__ = [
    "KEPT_DEADLINE",
    "Budget",
    "BudgetExceeded",
    "BudgetScope",
    "Decision",
    "EffectRef",
    "Hooks",
    "Permissions",
    "PinnablePolicy",
    "Reservation",
    "RunClock",
    "Verdict",
]

# --------------------------------------------------------------------------- budgets


@dataclass(slots=True, frozen=True)
class BudgetScope:
    """Whose money a reservation spends.

    `ancestors` are the runs this run was started from, outermost first (an Agent run by a
    tool of another run): they end only after it does, so it never waits for the holds on
    its path there — their node visits, and in `callers` the effect key of each one's call
    that started it (its tool call), or None when not known (every hold of that run)."""

    run_id: str
    user_id: str | None
    ancestors: tuple[str, ...] = ()
    callers: tuple[str | None, ...] = ()


@dataclass(slots=True, frozen=True)
class EffectRef:
    """The journaled effect a reservation is for: its key, and which execution of it made the
    hold (1, or the journal's `attempts` when the effect runs again after a crash). A hold a
    crash left is charged under it, so the run's usage can tell a charge whose outcome was
    journaled (and is counted from there) from one whose effect ran again."""

    key: str
    execution: int = 1


@dataclass(slots=True)
class Reservation:
    """An amount set aside before an effect, settled or released after; `effect` names the
    effect (None for a node visit, or a caller that does not say)."""

    scope: BudgetScope
    kind: Literal["model", "tool", "node"]
    amount: Usage
    id: str = ""
    effect: EffectRef | None = None


KEPT_DEADLINE = "run:wall_clock_s"
"""The cap a run's deadline is named by when no cap of its budget sets it: a deadline it was
begun with, kept when it is resumed under a budget without a wall-clock cap
(`override_policy`)."""


class BudgetExceeded(LoomgraphError):
    """A reservation would take a budget past one of its caps."""

    def __init__(self, cap: str, detail: str = "") -> None:
        super().__init__(f"budget cap {cap!r} reached" + (f": {detail}" if detail else ""))
        self.cap = cap
        self.detail = detail
        # What the refused step had been billed already (a model call's failed attempts):
        # charged, and counted in the run's usage although the step wrote no state.
        self.usage = Usage()


@runtime_checkable
class Budget(Protocol):
    """Reserve the worst case before an effect, settle the actual amount after."""

    async def reserve(self, reservation: Reservation) -> Reservation:
        """Set an amount aside, or raise BudgetExceeded naming the cap."""
        ...

    async def settle(self, reservation: Reservation, actual: Usage) -> Mapping[str, int] | None:
        """Replace a reservation by what was actually spent; what that added to the spending
        (by metric: nothing when a recovery had charged the hold already), or None unsaid."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Give a reservation back unspent."""
        ...

    async def close(self) -> None:
        """Release what the budget holds (its ledger's connections)."""
        ...


@runtime_checkable
class RunClock(Protocol):
    """A budget that follows each run from start to end (wall-clock caps, leftover holds)."""

    async def begin_run(
        self,
        scope: BudgetScope,
        *,
        started_at: float | None = None,
        deadline: float | None = None,
    ) -> float | None:
        """Start or resume a run's clock; the run's absolute deadline, if any."""
        ...

    async def end_run(self, scope: BudgetScope) -> None:
        """The run stopped: release what it still holds."""
        ...


# --------------------------------------------------------------------------- permissions

Verdict = Literal["allow", "deny", "ask"]


@dataclass(slots=True, frozen=True)
class Decision:
    """A permission verdict and the rule that decided it."""

    verdict: Verdict
    rule: str = ""
    reason: str = ""


@runtime_checkable
class Permissions(Protocol):
    """Decides whether a tool call may run."""

    async def check(
        self, call: ToolCall, spec: ToolSpec | None, *, user_id: str | None
    ) -> Decision:
        """allow, deny or ask for one call."""
        ...


@runtime_checkable
class PinnablePolicy(Protocol):
    """A permission policy that can say exactly what it is, so a run can be pinned to it, and
    how long an `ask` may wait for its answer."""

    # What an egress tool's call gets when its arguments carry untrusted text.
    on_tainted: Verdict

    def fingerprint(self) -> str:
        """A stable hash of everything that decides: equal for policies that decide alike."""
        ...

    def to_data(self) -> dict[str, Any]:
        """Everything that decides, as JSON-shaped data."""
        ...

    def approval_timeout(self, rule: str, *, user_id: str | None = None) -> float | None:
        """Seconds an ask decided by `rule` for `user_id`'s call may wait, or None for ever
        (a policy whose method takes no `user_id` is still called, with the rule alone)."""
        ...


# --------------------------------------------------------------------------- hooks


@runtime_checkable
class Hooks(Protocol):
    """User callbacks around nodes, tools and events; `before_tool` may deny, never approve."""

    async def before_node(self, node: str, state: Mapping[str, Any]) -> None:
        """Called before a node runs."""
        ...

    async def after_node(self, node: str, patch: Mapping[str, Any]) -> None:
        """Called after a node returned its patch."""
        ...

    async def before_tool(self, call: ToolCall) -> Decision | None:
        """Return a deny Decision to stop the call; None, or an allow or ask Decision, lets it
        through (hooks never approve); anything else denies it (`hook:error`)."""
        ...

    async def after_tool(self, call: ToolCall, result: ToolResult) -> None:
        """Called after a tool call finished."""
        ...

    async def on_event(self, event: Any) -> None:
        """Called for every event of a run."""
        ...

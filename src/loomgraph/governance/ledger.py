"""Budget ledgers: where the totals of every scope and the open reservations are kept.

A ledger stores, per scope (`global`, `user:alice`, `run:r-1`), what was spent and what is
reserved, and the open reservations ("holds") themselves. It knows nothing about caps: the
budget hands `transact` a pure function that reads the current totals and returns the change
to make (or raises), and the ledger applies it atomically — under a lock in memory, in one
`BEGIN IMMEDIATE` transaction in SQLite, under per-scope advisory locks in PostgreSQL. The
check logic is therefore written once, in `budget.py`, for every backend.

All amounts are integers: token and call counts as they are, cost in nano-dollars
(`NANO_USD` per USD), so adding and removing reservations never drifts by float rounding and
`spent + reserved <= cap` is checked exactly.

A ledger that cannot be reached raises `LedgerUnavailable`, a `ServiceUnavailable`: like a
journal that cannot be reached, it is not the run's failure (docs/governance.md, "When a
ledger cannot be reached").
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from loomgraph.errors import ServiceUnavailable
from loomgraph.protocols.governance import EffectRef

__all__ = [
    "METRICS",
    "NANO_USD",
    "Change",
    "Charge",
    "Hold",
    "InMemoryLedger",
    "Ledger",
    "LedgerUnavailable",
    "LedgerView",
    "Totals",
    "apply_change",
]

# Every amount a ledger keeps, in this order; `cost_usd` is held in nano-dollars.
METRICS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "model_calls",
    "tool_calls",
    "node_visits",
)
NANO_USD = 1_000_000_000

Amounts = dict[str, int]


class LedgerUnavailable(ServiceUnavailable):
    """The budget ledger cannot be reached: a file that cannot be opened, its lock held past
    `busy_timeout`, a server that refuses, drops the connection or does not answer in time.

    Not the run's failure: the engine lets it through, the run stays `running` in its journal
    and is resumed as after a crash; an effect whose settlement it interrupted keeps its
    hold, which the resume charges. `where` names the file, or the server (never its
    password) and schema; `detail` is the cause."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(_message(where, detail))
        self.where = where
        self.detail = detail


def _message(where: str, detail: str) -> str:
    """What a `LedgerUnavailable` says."""
    return f"budget ledger {where} is unavailable: {detail}"


@dataclass(slots=True)
class Totals:
    """What one scope has spent and has reserved, per metric (cost in nano-dollars)."""

    spent: Amounts = field(default_factory=dict)
    reserved: Amounts = field(default_factory=dict)

    def committed(self, metric: str) -> int:
        """spent + reserved of one metric: the amount no new reservation may push past a cap."""
        return self.spent.get(metric, 0) + self.reserved.get(metric, 0)

    def copy(self) -> Totals:
        """An independent copy."""
        return Totals(dict(self.spent), dict(self.reserved))


@dataclass(slots=True, frozen=True)
class Hold:
    """An open reservation: its id, the run it belongs to, the scopes it counts against, and
    the effect (and execution of it) it was made for, when the reservation named one."""

    id: str
    run_id: str
    scopes: tuple[str, ...]
    amounts: Mapping[str, int]
    created_at: float = 0.0
    effect: EffectRef | None = None


@dataclass(slots=True, frozen=True)
class Charge:
    """A hold charged in full because its effect's outcome is unknown (its process died
    between reserve and settle); kept per run, under the hold's id, so it is made once.
    `effect` is the hold's: what tells a charge whose outcome was journaled after all."""

    id: str
    run_id: str
    amounts: Mapping[str, int]
    created_at: float = 0.0
    effect: EffectRef | None = None


@dataclass(slots=True, frozen=True)
class Change:
    """What one transaction does: open a hold, drop one, and/or add spending to scopes;
    `charge` records why a hold was spent without a settle."""

    hold: Hold | None = None
    remove: Hold | None = None
    spend: Mapping[str, int] = field(default_factory=dict)
    spend_scopes: tuple[str, ...] = ()
    charge: Charge | None = None


@dataclass(slots=True, frozen=True)
class LedgerView:
    """What `decide` sees inside a transaction: the scopes' totals and the hold asked for;
    when that hold is gone, the crash charge made for it, if one was."""

    totals: Mapping[str, Totals]
    hold: Hold | None
    charged: Charge | None = None


Decide = Callable[[LedgerView], Change]


def apply_change(totals: Mapping[str, Totals], change: Change) -> dict[str, Totals]:
    """The totals of every touched scope after `change` (the inputs are not modified)."""
    out: dict[str, Totals] = {}

    def scope(name: str) -> Totals:
        if name not in out:
            out[name] = (totals.get(name) or Totals()).copy()
        return out[name]

    if change.remove is not None:
        for name in change.remove.scopes:
            _add(scope(name).reserved, change.remove.amounts, -1)
    if change.hold is not None:
        for name in change.hold.scopes:
            _add(scope(name).reserved, change.hold.amounts, 1)
    for name in change.spend_scopes:
        _add(scope(name).spent, change.spend, 1)
    return out


def _add(target: Amounts, amounts: Mapping[str, int], sign: int) -> None:
    for metric, value in amounts.items():
        total = target.get(metric, 0) + sign * value
        if total:
            target[metric] = total
        else:
            target.pop(metric, None)  # zeros are not kept, in memory as in SQL


class Ledger(ABC):
    """Scope totals and open holds, changed only through atomic `transact` calls.

    `local`: every change to it is made in this process (a budget waiting for holds then
    needs no re-reading to see them end: see `hold_wait`). `place` names the store, so that
    two ledger objects on one file or schema wake each other's waiters in this process.
    """

    local: ClassVar[bool] = False

    @property
    def place(self) -> Hashable:
        """What identifies the store this ledger keeps its totals in (by default: itself)."""
        return ("ledger", id(self))

    @property
    def kept_at(self) -> str | None:
        """Where the totals are kept, as a run's budget is pinned to it and a message names
        it (never a password); None for a store of this process's only."""
        return None

    @abstractmethod
    async def transact(
        self, scopes: Sequence[str], hold_id: str | None, decide: Decide, *, durable: bool = True
    ) -> dict[str, Totals]:
        """Atomically: read `scopes` (and hold `hold_id`), apply `decide`'s change.

        The scopes of the hold are read too. If `decide` raises, nothing is changed and the
        exception propagates. Returns the totals of the scopes the change touched.
        `durable=False`: the hold the change adds guards no cap, so it need not survive a
        power cut (only a process's death); a store may commit it without an fsync. (A
        ledger whose `transact` has no `durable` parameter is always asked for durable ones.)
        """

    @abstractmethod
    async def totals(self, scope: str) -> Totals:
        """The current totals of one scope (zeros when it was never used)."""

    @abstractmethod
    async def holds(self, run_id: str | None = None) -> list[Hold]:
        """The open holds, optionally of one run, oldest first."""

    @abstractmethod
    async def charges(self, run_id: str) -> list[Charge]:
        """The holds of a run charged after a crash, oldest first."""

    @abstractmethod
    async def run_clock(
        self, run_id: str, started_at: float, deadline: float | None
    ) -> tuple[float, float | None]:
        """Record a run's start and deadline unless known; the stored (start, deadline)."""

    @abstractmethod
    async def forget_run(self, run_id: str) -> None:
        """Drop a run's clock (its holds are released by the budget, not here)."""

    async def close(self) -> None:  # noqa: B027 - optional: only SQL ledgers hold connections
        """Release connections; the next use opens them again."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def is_ledger(ledger: object) -> bool:
    """A `Ledger`, or an object with every method a Ledger must have (a wrapper around one)."""
    return isinstance(ledger, Ledger) or all(
        callable(getattr(ledger, method, None)) for method in Ledger.__abstractmethods__
    )


class InMemoryLedger(Ledger):
    """A ledger in process memory, shared by every run of the Agents that hold it.

    `transact` never awaits between reading and writing, so it is atomic on the event loop by
    construction; the threading lock also covers callers on other loops or threads (an
    asyncio.Lock would bind the ledger to one loop and break under a second `asyncio.run`).
    """

    local = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, Totals] = {}
        self._holds: dict[str, Hold] = {}
        self._charges: dict[str, Charge] = {}
        self._clocks: dict[str, tuple[float, float | None]] = {}

    async def transact(
        self, scopes: Sequence[str], hold_id: str | None, decide: Decide, *, durable: bool = True
    ) -> dict[str, Totals]:
        """Read, decide and write under one lock (memory: `durable` changes nothing)."""
        with self._lock:
            hold = self._holds.get(hold_id) if hold_id is not None else None
            charged = self._charges.get(hold_id) if hold_id and hold is None else None
            names = _scope_names(scopes, hold)
            totals = {n: self._totals.get(n, Totals()).copy() for n in names}
            view = LedgerView(totals, hold, charged)
            change = decide(view)
            updated = apply_change(view.totals, change)
            self._totals.update({n: t.copy() for n, t in updated.items()})
            if change.remove is not None:
                self._holds.pop(change.remove.id, None)
            if change.hold is not None:
                self._holds[change.hold.id] = change.hold
            if change.charge is not None:
                self._charges.setdefault(change.charge.id, change.charge)
            return updated

    async def totals(self, scope: str) -> Totals:
        """A copy of one scope's totals."""
        with self._lock:
            return self._totals.get(scope, Totals()).copy()

    async def holds(self, run_id: str | None = None) -> list[Hold]:
        """Open holds, oldest first."""
        with self._lock:
            found = [h for h in self._holds.values() if run_id is None or h.run_id == run_id]
        return sorted(found, key=lambda h: h.created_at)

    async def charges(self, run_id: str) -> list[Charge]:
        """The run's crash charges, oldest first."""
        with self._lock:
            found = [c for c in self._charges.values() if c.run_id == run_id]
        return sorted(found, key=lambda c: c.created_at)

    async def run_clock(
        self, run_id: str, started_at: float, deadline: float | None
    ) -> tuple[float, float | None]:
        """The first recorded clock of the run wins."""
        with self._lock:
            return self._clocks.setdefault(run_id, (started_at, deadline))

    async def forget_run(self, run_id: str) -> None:
        """Drop the run's clock."""
        with self._lock:
            self._clocks.pop(run_id, None)


def _scope_names(scopes: Iterable[str], hold: Hold | None) -> list[str]:
    """The requested scopes plus the hold's, each once, sorted (the lock order for SQL)."""
    names = set(scopes)
    if hold is not None:
        names.update(hold.scopes)
    return sorted(names)

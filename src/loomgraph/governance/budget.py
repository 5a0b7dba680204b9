"""`StandardBudget`: caps that are never exceeded, by reserving the worst case before an effect.

Before a model call the budget reserves its worst case — the counted prompt plus `max_tokens`
of output, priced with the one price table (`loomgraph/pricing.py`) — and before a tool call or a
node visit one call or visit. The reservation succeeds only if, for every capped scope
(`global`, `user:<id>`) and every capped metric, `spent + reserved + amount <= cap`; the check
and the recording of the reservation happen in one ledger transaction, so concurrent runs and
processes sharing a ledger cannot both pass on the same headroom. After the effect, `settle`
replaces the reservation by what was actually used; `release` gives it back.

Why settling cannot overshoot: a provider never returns more than `max_tokens` of output, and
the prompt it bills is the one that was counted, so actual tokens ≤ reserved tokens; cost is a
monotone function of tokens priced by the same table (prompt tokens at the dearest of the
input, cache-write and cache-read prices), so actual cost ≤ reserved cost. The one estimate is
the prompt's size (≈4 characters a token): `input_margin` scales it when a tokenizer counts
more. A settle beyond its reservation is still recorded in full — the provider billed it —
and then blocks every later reservation on that cap.

A model call without a `max_tokens` of its caller's is sized and reserved in one step:
`fit_output` holds the worst case of the output it allows (so no other run can take that
room between the sizing and the call), and the call's `reserve` takes that hold over without
another transaction. A reservation refused only because other runs hold the room waits for
their holds (`hold_wait`); the wall clock is in `run_clocks`, warnings in `budget_warnings`.
"""

from __future__ import annotations

import copy
import math
import time
import uuid
from collections.abc import Callable, Mapping

from loomgraph.governance.amounts import (
    counts_of,
    metrics_of,
    priced_usage,
    refuse_past_caps,
    worst_case_of,
)
from loomgraph.governance.budget_warnings import Warnings
from loomgraph.governance.caps import (
    BudgetConfig,
    BudgetConfigError,
    BudgetWarning,
    Caps,
    UnpricedModel,
    WarningCallback,
    check_priced,
    user_scope,
)
from loomgraph.governance.crash_charges import charged_usage, close_left_holds, settled
from loomgraph.governance.fit import FittedHolds, Sizing
from loomgraph.governance.hold_wait import Check, hold_or_wait, ring
from loomgraph.governance.ledger import (
    Change,
    Charge,
    Hold,
    InMemoryLedger,
    Ledger,
    LedgerView,
    Totals,
    is_ledger,
)
from loomgraph.governance.ledger_sites import LedgerPlaces
from loomgraph.governance.run_clocks import RunClocks
from loomgraph.protocols import BudgetExceeded, BudgetScope, Reservation, Usage
from loomgraph.protocols.governance import EffectRef
from loomgraph.protocols.ledger import LedgerSite
from loomgraph.protocols.pricing import compute_cost

__all__ = [
    "BudgetConfig",
    "BudgetConfigError",
    "BudgetWarning",
    "Caps",
    "StandardBudget",
    "UnpricedModel",
]

DEFAULT_MAX = 4096
"""Output tokens reserved when neither the model nor the config gives a limit."""
MODEL_METRICS = frozenset(
    ("input_tokens", "output_tokens", "total_tokens", "cost_usd", "model_calls")
)
"""What a model call's hold holds: a scope capping none of them needs no durable hold."""


class StandardBudget:
    """Caps on tokens, cost, calls, node visits and wall clock, global and per user.

    `ledger` defaults to an `InMemoryLedger` (shared by the runs of the Agents holding this
    budget); pass a `SqliteLedger` or `PostgresLedger` to share caps across processes.
    `on_warning` (sync or async) is called once per cap and scope when its spending passes
    `warn_at`; `clock` gives the time (seconds since the epoch) for wall-clock caps.
    """

    def __init__(
        self,
        config: BudgetConfig | None = None,
        ledger: Ledger | None = None,
        *,
        on_warning: WarningCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config is not None and not isinstance(config, BudgetConfig):
            raise BudgetConfigError(
                "config", f"a budget's config is a BudgetConfig, not {type(config).__name__}"
            )
        if ledger is not None and not is_ledger(ledger):
            raise BudgetConfigError(
                "ledger", f"a budget's ledger is a Ledger, not {type(ledger).__name__}"
            )
        self.config = config or BudgetConfig()
        self.ledger = ledger if ledger is not None else InMemoryLedger()
        self.model = self.config.model
        self.on_warning = on_warning
        self._clock = clock
        # Shared with the bound copies (`bind` copies this object shallowly):
        self._warnings = Warnings()
        self._run_clocks = RunClocks(clock)
        self._places = LedgerPlaces()
        self._fitted = FittedHolds()  # holds fit_output made, until reserved
        self._bound = False

    # ------------------------------------------------------------------ binding

    def bind(
        self, *, model: str, site: LedgerSite | None, on_warning: WarningCallback
    ) -> StandardBudget:
        """This budget as one Agent uses it; this object is left unchanged.

        The bound budget shares the caps, the warnings given and the runs' clocks with this
        one. It prices with `model` unless this budget has a model, reports to `on_warning`
        unless it has a callback, and keeps its ledger at `site` (the Agent's durable
        journal, so caps hold across processes) while this budget is on the default
        in-memory ledger. This budget's `totals` (and `charges`) then read that ledger.
        """
        bound = copy.copy(self)
        bound._bound = True
        if bound.model is None:
            bound.model = model
        if self.config.caps_cost():
            # Refused where the Agent is made, not at its first call (UnpricedModel).
            check_priced(bound.model, self.config.prices)
        placed = site is not None and type(self.ledger) is InMemoryLedger
        bound.ledger = self._places.place(site if placed else None, self.ledger)
        if bound.on_warning is None:
            bound.on_warning = on_warning
        return bound

    async def close(self) -> None:
        """Close the ledger's connections (the next use opens them again)."""
        await self.ledger.close()

    # ------------------------------------------------------------------ scopes and amounts

    def scopes(self, scope: BudgetScope) -> list[tuple[str, dict[str, int]]]:
        """The capped ledger scopes a reservation counts against, with their caps."""
        out = []
        limits = self.config.limits()
        if limits:
            out.append(("global", limits))
        caps = self.config.user_caps(scope.user_id)
        if caps is not None and (limits := caps.limits()):
            out.append((user_scope(scope.user_id), limits))
        return out

    def worst_case(self, reservation: Reservation) -> dict[str, int]:
        """What a reservation holds in the ledger: its amount at worst, priced."""
        return worst_case_of(reservation, self.config.input_margin, self._cost)

    def measure(self, reservation: Reservation, actual: Usage) -> dict[str, int]:
        """What a settled effect spent; counts the actual usage omits (leaves at zero) are the
        reserved ones, and a zero cost is priced from the tokens."""
        return metrics_of(actual, self.price(actual), counts_of(reservation, actual))

    def price(self, usage: Usage) -> float:
        """What `usage` costs as this budget charges it, in USD: its own `cost_usd`, else its
        tokens priced with the budget's model and prices (0.0 without a model to price)."""
        return float(usage.cost_usd) if usage.cost_usd else self._cost(usage)

    def _cost(self, usage: Usage) -> float:
        prices = self.config.prices
        if self.model is None and not callable(prices):
            return 0.0  # no model to look up in the table: cost caps refuse to reserve
        return compute_cost(self.model or "", usage, prices)

    def _check_priced(self, scopes: list[tuple[str, dict[str, int]]]) -> None:
        # A call priced at $0 because nothing knows its price would never meet a cost cap.
        if any("cost_usd" in limits for _, limits in scopes):
            check_priced(self.model, self.config.prices)

    # ------------------------------------------------------------------ the Budget protocol

    async def reserve(self, reservation: Reservation) -> Reservation:
        """Hold the worst case of an effect, or raise BudgetExceeded naming the cap; wait
        (at most `hold_wait_s`) while only other runs' holds stand in the way."""
        if reservation.kind == "model" and self._fitted and not reservation.id:
            adopted = self._adopt(reservation)
            if adopted is not None:
                return adopted
        await self._check_clock(reservation.scope)
        scopes = self.scopes(reservation.scope)
        if reservation.kind == "model":
            self._check_priced(scopes)
        amounts = self.worst_case(reservation)
        rid = reservation.id or uuid.uuid4().hex
        usage = priced_usage(reservation.amount, amounts)
        priced = Reservation(reservation.scope, reservation.kind, usage, rid, reservation.effect)
        if not scopes:
            return priced
        names = tuple(name for name, _ in scopes)
        run_id, effect = reservation.scope.run_id, reservation.effect
        hold = Hold(rid, run_id, names, amounts, self._clock(), effect)

        def check(totals: Mapping[str, Totals]) -> Change:
            refuse_past_caps(scopes, totals, amounts)
            return Change(hold=hold)

        # A hold of nothing capped (a node visit, where no scope caps visits) must survive
        # a process's death, to be charged, but not a power cut: no cap depends on it.
        guards = any(m in limits for _, limits in scopes for m in amounts)
        await self._hold(reservation.scope, hold.scopes, check, guards, effect)
        return priced

    async def fit_output(
        self,
        scope: BudgetScope,
        prompt_tokens: int,
        limit: int | None,
        effect: EffectRef | None = None,
    ) -> int:
        """The output tokens a model call may reserve now, held for that call: the smallest
        of `limit` (the model's), `config.default_max_tokens` (DEFAULT_MAX when neither gives
        one) and what every token and cost cap has left after the prompt; raises
        BudgetExceeded, naming the cap, when not even the prompt fits (after waiting, as
        `reserve` does, while other runs' holds stand in the way). The call's `reserve` of
        that worst case (for the same `effect`) takes the hold over."""
        given = [x for x in (limit, self.config.default_max_tokens) if x]
        want = min(given) if given else DEFAULT_MAX
        scopes = self.scopes(scope)
        if not scopes:
            return want
        await self._check_clock(scope)
        self._check_priced(scopes)
        names, rid = tuple(name for name, _ in scopes), uuid.uuid4().hex

        def held(output: int) -> dict[str, int]:
            # worst_case applies the margin itself, so it is given the raw prompt.
            amount = Usage(input_tokens=prompt_tokens, output_tokens=output, model_calls=1)
            return self.worst_case(Reservation(scope, "model", amount))

        prompt = math.ceil(prompt_tokens * self.config.input_margin)
        sizing = Sizing(
            scopes,
            prompt,
            want,
            held,
            lambda amounts: Hold(rid, scope.run_id, names, amounts, self._clock(), effect),
        )
        guards = any(m in limits for _, limits in scopes for m in MODEL_METRICS)
        await self._hold(scope, names, sizing, guards, effect)
        if sizing.made is not None:  # (always: it was held, or BudgetExceeded was raised)
            self._fitted.add(sizing.made)
        return sizing.room

    def _adopt(self, reservation: Reservation) -> Reservation | None:
        """The hold `fit_output` made for this model call (its worst case exactly), taken
        over: no second transaction. None when there is none."""
        amounts = self.worst_case(reservation)
        hold = self._fitted.take(reservation.scope.run_id, amounts, reservation.effect)
        if hold is None:
            return None
        usage = priced_usage(reservation.amount, amounts)
        return Reservation(reservation.scope, reservation.kind, usage, hold.id, hold.effect)

    async def _hold(
        self,
        scope: BudgetScope,
        names: tuple[str, ...],
        check: Check,
        durable: bool,
        effect: EffectRef | None,
    ) -> None:
        """Make `check`'s hold for `effect`, waiting for holds that end (see `hold_wait`)."""
        try:
            await hold_or_wait(
                self.ledger,
                names,
                scope,
                check,
                durable=durable,
                bound=lambda: self._run_clocks.wait_bound(scope.run_id, self.config.hold_wait_s),
                effect=effect,
            )
        except BudgetExceeded:
            await self._check_clock(scope)  # a wait that reached the deadline: its refusal
            raise

    async def settle(self, reservation: Reservation, actual: Usage) -> dict[str, int]:
        """Replace the held amount by the actual one (charged in full even past a cap); what
        that added to the spending."""
        scopes = self.scopes(reservation.scope)
        if not scopes:
            return {}
        spend = self.measure(reservation, actual)
        names = tuple(name for name, _ in scopes)
        added: dict[str, int] = {}

        def decide(view: LedgerView) -> Change:
            change = settled(view, spend, names)
            added.clear()  # (a ledger may decide again after a conflict)
            added.update(change.spend)
            return change

        updated = await self.ledger.transact(names, reservation.id or None, decide)
        ring(self.ledger)
        await self._warnings.spending(
            self.config.warn_at, scopes, updated, reservation.scope, self.on_warning
        )
        return added

    async def release(self, reservation: Reservation) -> None:
        """Give a held amount back unspent (a no-op for an unknown reservation)."""
        if not reservation.id or not self.scopes(reservation.scope):
            return
        await self.ledger.transact((), reservation.id, lambda view: Change(remove=view.hold))
        ring(self.ledger)

    # ------------------------------------------------------------------ runs and wall clock

    def deadline_for(self, start: float, user_id: str | None = None) -> float | None:
        """A run's absolute deadline (None without a wall-clock cap)."""
        return self.config.deadline_for(start, user_id)

    async def begin_run(
        self,
        scope: BudgetScope,
        *,
        started_at: float | None = None,
        deadline: float | None = None,
    ) -> float | None:
        """Start (or resume) a run's clock and close the holds a crashed attempt left behind
        (see `crash_charges`: an effect in flight is charged its reservation, a node visit's
        hold given back, as the resume does the visit again).

        The first recorded clock of a run wins, so a resume keeps the original deadline; pass
        the deadline stored with the run (`RunRecord.deadline`) to keep it even when the
        ledger forgot the run. Returns the run's deadline.
        """
        if await close_left_holds(self.ledger, scope.run_id, self._clock()):
            ring(self.ledger)
        return await self._run_clocks.start(self.ledger, self.config, scope, started_at, deadline)

    async def charges(self, run_id: str) -> list[Charge]:
        """The holds of `run_id` charged because their process died (for audits and views)."""
        return await self._reading().charges(run_id)

    async def crashed_usage(self, run_id: str) -> Usage:
        """What crashed attempts of `run_id` were charged, as usage: all of it (the run's
        total leaves out the charges its journaled outcomes count, `recovery.crashed_usage`)."""
        return charged_usage(await self._reading().charges(run_id))

    async def end_run(self, scope: BudgetScope) -> None:
        """A run finished: release what it still holds and forget its clock."""
        self._fitted.forget(scope.run_id)
        holds = await self.ledger.holds(scope.run_id)
        for hold in holds:
            await self.ledger.transact((), hold.id, lambda view: Change(remove=view.hold))
        if holds:
            ring(self.ledger)
        had_deadline = self._run_clocks.forget(scope.run_id)
        if had_deadline or self.config.wall_clock_cap(scope.user_id) is not None:
            await self.ledger.forget_run(scope.run_id)
        self._warnings.forget_run(scope.run_id)

    async def _check_clock(self, scope: BudgetScope) -> None:
        warning = await self._run_clocks.check(self.ledger, self.config, scope)
        if warning is not None:
            await self._warnings.emit(f"{scope.run_id}\n{warning.cap}", warning, self.on_warning)

    # ------------------------------------------------------------------ warnings and totals

    def warnings(self) -> list[BudgetWarning]:
        """The warnings given so far (the latest 1,000), oldest first."""
        return list(self._warnings.given)

    async def totals(self, scope: str = "global") -> Totals:
        """A ledger scope's totals (`global` or `user:<id>`; cost in nano-dollars). On the
        budget given to Agents, the ledger they placed it in (AmbiguousLedger when they
        placed it in several)."""
        return await self._reading().totals(scope)

    def _reading(self) -> Ledger:
        """The ledger this budget's reads go to: a bound copy's own; for the budget the user
        made, the one its bound copies use (see `LedgerPlaces.reading`)."""
        return self.ledger if self._bound else self._places.reading(self.ledger)

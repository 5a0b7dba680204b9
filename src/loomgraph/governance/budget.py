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
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping

from loomgraph.governance.amounts import counts_of, detail_of, metrics_of, priced_usage
from loomgraph.governance.caps import (
    BudgetConfig,
    BudgetWarning,
    Caps,
    WarningCallback,
    user_scope,
)
from loomgraph.governance.crash_charges import charge_left_holds, charged_usage
from loomgraph.governance.fit import output_room
from loomgraph.governance.ledger import (
    Change,
    Charge,
    Hold,
    InMemoryLedger,
    Ledger,
    LedgerView,
    Totals,
)
from loomgraph.governance.ledger_sites import ledger_at
from loomgraph.protocols import BudgetExceeded, BudgetScope, Reservation, Usage
from loomgraph.protocols.ledger import LedgerSite
from loomgraph.protocols.pricing import compute_cost

__all__ = ["BudgetConfig", "BudgetWarning", "Caps", "StandardBudget"]

log = logging.getLogger(__name__)

DEFAULT_MAX = 4096
"""Output tokens reserved when neither the model nor the config gives a limit."""


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
        self.config = config or BudgetConfig()
        self.ledger = ledger if ledger is not None else InMemoryLedger()
        self.model = self.config.model
        self.on_warning = on_warning
        self._clock = clock
        self._warned: set[str] = set()
        self._warnings: deque[BudgetWarning] = deque(maxlen=1000)
        self._clocks: dict[str, tuple[float, float | None]] = {}

    # ------------------------------------------------------------------ binding

    def bind(
        self, *, model: str, site: LedgerSite | None, on_warning: WarningCallback
    ) -> StandardBudget:
        """This budget as one Agent uses it; this object is left unchanged.

        The bound budget shares the caps, the warnings given and the runs' clocks with this
        one. It prices with `model` unless this budget has a model, reports to `on_warning`
        unless it has a callback, and keeps its ledger at `site` (the Agent's durable
        journal, so caps hold across processes) while this budget is on the default
        in-memory ledger.
        """
        bound = copy.copy(self)
        if bound.model is None:
            bound.model = model
        if site is not None and type(self.ledger) is InMemoryLedger:
            bound.ledger = ledger_at(site)
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
        amount = reservation.amount
        prompt = math.ceil(amount.prompt_tokens * self.config.input_margin)
        output = amount.output_tokens
        tokens = Usage(input_tokens=prompt, output_tokens=output)
        cost = 0.0
        if prompt or output:
            # A prompt token may be billed as input, cache write or cache read: take the dearest.
            cost = max(
                self._cost(tokens),
                self._cost(Usage(cache_write_tokens=prompt, output_tokens=output)),
                self._cost(Usage(cache_read_tokens=prompt, output_tokens=output)),
            )
        cost = max(cost, float(amount.cost_usd))
        return metrics_of(tokens, cost, counts_of(reservation, amount))

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

    # ------------------------------------------------------------------ the Budget protocol

    async def reserve(self, reservation: Reservation) -> Reservation:
        """Hold the worst case of an effect, or raise BudgetExceeded naming the cap."""
        await self._check_clock(reservation.scope)
        scopes = self.scopes(reservation.scope)
        unpriced = self.model is None and not callable(self.config.prices)
        if (
            reservation.kind == "model"
            and unpriced
            and any("cost_usd" in limits for _, limits in scopes)
        ):
            raise ValueError(
                "a cost_usd cap needs BudgetConfig(model=...) (or budget.model) "
                "to price model reservations"
            )
        amounts = self.worst_case(reservation)
        rid = reservation.id or uuid.uuid4().hex
        priced = Reservation(
            reservation.scope, reservation.kind, priced_usage(reservation.amount, amounts), rid
        )
        if not scopes:
            return priced
        hold = Hold(
            rid, reservation.scope.run_id, tuple(name for name, _ in scopes), amounts, self._clock()
        )

        def decide(view: LedgerView) -> Change:
            for name, limits in scopes:
                totals = view.totals[name]
                for metric, cap in limits.items():
                    need = amounts.get(metric, 0)
                    if need > 0 and totals.committed(metric) + need > cap:
                        raise BudgetExceeded(
                            f"{name}:{metric}", detail_of(metric, totals, need, cap)
                        )
            return Change(hold=hold)

        # A hold of nothing capped (a node visit, where no scope caps visits) must survive
        # a process's death, to be charged, but not a power cut: no cap depends on it.
        guards = any(m in limits for _, limits in scopes for m in amounts)
        if guards or not _relaxes(self.ledger):
            await self.ledger.transact(hold.scopes, None, decide)
        else:
            await self.ledger.transact(hold.scopes, None, decide, durable=False)
        return priced

    async def fit_output(self, scope: BudgetScope, prompt_tokens: int, limit: int | None) -> int:
        """The output tokens a model call may reserve now: the smallest of `limit` (the
        model's), `config.default_max_tokens` and what every token and cost cap has left after
        the prompt; raises BudgetExceeded, naming the cap, when not even the prompt fits."""
        want = min(x for x in (limit, self.config.default_max_tokens, DEFAULT_MAX) if x)
        scopes = self.scopes(scope)
        if not scopes:
            return want
        totals = {name: await self.ledger.totals(name) for name, _ in scopes}
        prompt = math.ceil(prompt_tokens * self.config.input_margin)

        def cost_of(prompt_tokens: int, output: int) -> int:
            amount = Usage(input_tokens=prompt_tokens, output_tokens=output)
            return self.worst_case(Reservation(scope, "model", amount)).get("cost_usd", 0)

        # worst_case applies the margin itself, so it is given the raw prompt.
        return output_room(
            scopes, totals, prompt, want, lambda _p, out: cost_of(prompt_tokens, out)
        )

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
            hold = view.hold
            if hold is not None:
                change = Change(remove=hold, spend=spend, spend_scopes=hold.scopes)
            elif view.charged is not None:
                # A resume charged the hold in full, taking this process for dead (it was
                # stopped past its lease): only what it spent beyond that is added.
                paid = view.charged.amounts
                extra = {m: n - paid.get(m, 0) for m, n in spend.items() if n > paid.get(m, 0)}
                change = Change(spend=extra, spend_scopes=names)
            else:
                # Without its hold (settled twice, or released) the amount was still spent:
                # charge it to the scopes the reservation's owner has now.
                change = Change(spend=spend, spend_scopes=names)
            added.clear()  # (a ledger may decide again after a conflict)
            added.update(change.spend)
            return change

        updated = await self.ledger.transact(names, reservation.id or None, decide)
        await self._warn(scopes, updated, reservation.scope)
        return added

    async def release(self, reservation: Reservation) -> None:
        """Give a held amount back unspent (a no-op for an unknown reservation)."""
        if not reservation.id or not self.scopes(reservation.scope):
            return
        await self.ledger.transact((), reservation.id, lambda view: Change(remove=view.hold))

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
        """Start (or resume) a run's clock and charge the holds a crashed attempt left behind
        (see `crash_charges`: an effect whose outcome is unknown is charged its reservation).

        The first recorded clock of a run wins, so a resume keeps the original deadline; pass
        the deadline stored with the run (`RunRecord.deadline`) to keep it even when the
        ledger forgot the run. Returns the run's deadline.
        """
        await charge_left_holds(self.ledger, scope.run_id, self._clock())
        return await self._start_clock(scope, started_at, deadline)

    async def charges(self, run_id: str) -> list[Charge]:
        """The holds of `run_id` charged because their process died (for audits and views)."""
        return await self.ledger.charges(run_id)

    async def crashed_usage(self, run_id: str) -> Usage:
        """What crashed attempts of `run_id` were charged, as usage the run's total includes."""
        return charged_usage(await self.ledger.charges(run_id))

    async def _start_clock(
        self, scope: BudgetScope, started_at: float | None, deadline: float | None
    ) -> float | None:
        start = self._clock() if started_at is None else started_at
        if deadline is None:
            deadline = self.deadline_for(start, scope.user_id)
        if deadline is None:
            self._clocks[scope.run_id] = (start, None)
            return None
        self._clocks[scope.run_id] = await self.ledger.run_clock(scope.run_id, start, deadline)
        return self._clocks[scope.run_id][1]

    async def end_run(self, scope: BudgetScope) -> None:
        """A run finished: release what it still holds and forget its clock."""
        for hold in await self.ledger.holds(scope.run_id):
            await self.ledger.transact((), hold.id, lambda view: Change(remove=view.hold))
        had_deadline = self._clocks.pop(scope.run_id, (0.0, None))[1] is not None
        if had_deadline or self.config.wall_clock_cap(scope.user_id) is not None:
            await self.ledger.forget_run(scope.run_id)
        # In place: a bound copy of this budget shares the set.
        self._warned -= {k for k in self._warned if k.startswith(f"{scope.run_id}\n")}

    async def _check_clock(self, scope: BudgetScope) -> None:
        binding = self.config.wall_clock_cap(scope.user_id)
        if binding is None:
            return
        if scope.run_id not in self._clocks:
            # Not begun explicitly: start the clock now (holds of the run are left alone,
            # since this run may be making them right now).
            await self._start_clock(scope, None, None)
        start, deadline = self._clocks[scope.run_id]
        if deadline is None:
            return
        now = self._clock()
        cap = binding[0]
        if now >= deadline:
            raise BudgetExceeded(
                cap,
                f"run {scope.run_id!r} passed its deadline "
                f"{now - deadline:.1f}s ago ({deadline - start:g}s allowed)",
            )
        warn_at = self.config.warn_at
        if warn_at is not None and deadline > start and now - start >= warn_at * (deadline - start):
            await self._emit(
                f"{scope.run_id}\n{cap}",
                BudgetWarning(cap, (now - start) / (deadline - start), scope.run_id, scope.user_id),
            )

    # ------------------------------------------------------------------ warnings and totals

    def warnings(self) -> list[BudgetWarning]:
        """The warnings given so far (the latest 1,000), oldest first."""
        return list(self._warnings)

    async def totals(self, scope: str = "global") -> Totals:
        """A ledger scope's totals (`global` or `user:<id>`; cost in nano-dollars)."""
        return await self.ledger.totals(scope)

    async def _warn(
        self,
        scopes: list[tuple[str, dict[str, int]]],
        updated: Mapping[str, Totals],
        scope: BudgetScope,
    ) -> None:
        warn_at = self.config.warn_at
        if warn_at is None:
            return
        for name, limits in scopes:
            totals = updated.get(name)
            if totals is None:
                continue
            for metric, cap in limits.items():
                spent = totals.spent.get(metric, 0)
                if cap > 0 and spent >= warn_at * cap:
                    cap_name = f"{name}:{metric}"
                    await self._emit(
                        cap_name, BudgetWarning(cap_name, spent / cap, scope.run_id, scope.user_id)
                    )

    async def _emit(self, key: str, warning: BudgetWarning) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        self._warnings.append(warning)
        if self.on_warning is None:
            return
        try:
            result = self.on_warning(warning)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A broken callback must not break the accounting of an effect that happened.
            log.exception("budget on_warning callback failed for %s", warning.cap)


def _relaxes(ledger: Ledger) -> bool:
    """Whether `ledger.transact` takes `durable` (a ledger written before it did not)."""
    kind = type(ledger)
    known = _RELAXES.get(kind)
    if known is None:
        known = _RELAXES[kind] = "durable" in inspect.signature(kind.transact).parameters
    return known


_RELAXES: dict[type, bool] = {}

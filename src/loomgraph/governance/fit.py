"""How much output a model reservation can hold: the rest of every token and cost cap.

With no `max_tokens` from the caller, the node context asks the budget for the largest output
that fits (`StandardBudget.fit_output`) and sends that as `max_tokens`, so the reservation is
a true worst case and a small cap is not refused on the adapter's 4,096 default. A cap that
cannot even hold the prompt is reported here, before any call, naming the cap.

The sizing is made inside the ledger transaction that holds it (`Sizing`, a check for
`hold_wait`): sized on totals read earlier, a call could find its room taken by another
run's call by the time it reserves — and a reservation cannot shrink a `max_tokens` already
chosen. The call's own reservation then takes that hold over (`FittedHolds`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from loomgraph.governance.amounts import Limits, refuse_past_caps
from loomgraph.governance.ledger import NANO_USD, Change, Hold, Totals
from loomgraph.protocols import BudgetExceeded
from loomgraph.protocols.governance import EffectRef

__all__ = ["PROMPT_METRICS", "FittedHolds", "Sizing", "output_room"]

PROMPT_METRICS = ("input_tokens", "total_tokens", "cost_usd")


@dataclass(slots=True)
class Sizing:
    """One model call's output sized to the totals of a ledger transaction, and held.

    `held(output)` is the call's worst case with that much output (priced; `prompt` is the
    counted prompt, margin applied); `hold(amounts)` the hold of it. Called with the totals,
    it returns the change holding the most output that fits (BudgetExceeded when none does)
    and keeps `room` and `made`, the hold.
    """

    scopes: Limits
    prompt: int
    want: int
    held: Callable[[int], dict[str, int]]
    hold: Callable[[dict[str, int]], Hold]
    room: int = 0
    made: Hold | None = None

    def __call__(self, totals: Mapping[str, Totals]) -> Change:
        room = output_room(
            self.scopes,
            totals,
            self.prompt,
            self.want,
            lambda _p, out: self.held(out).get("cost_usd", 0),
        )
        amounts = self.held(room)
        refuse_past_caps(self.scopes, totals, amounts)  # the caps on calls, too
        self.room, self.made = room, self.hold(amounts)
        return Change(hold=self.made)


class FittedHolds:
    """The holds `fit_output` made, by run, until the call's reservation takes one over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list[Hold]] = {}

    def __bool__(self) -> bool:
        return bool(self._runs)

    def add(self, hold: Hold) -> None:
        """Keep a hold fit_output made."""
        with self._lock:
            self._runs.setdefault(hold.run_id, []).append(hold)

    def take(
        self, run_id: str, amounts: Mapping[str, int], effect: EffectRef | None = None
    ) -> Hold | None:
        """The run's fitted hold of exactly `amounts` for `effect`, no longer kept; None if
        there is none (calls of one run in parallel take their own)."""
        with self._lock:
            pending = self._runs.get(run_id, [])
            for hold in pending:
                if hold.amounts == amounts and hold.effect == effect:
                    pending.remove(hold)
                    if not pending:
                        del self._runs[run_id]
                    return hold
        return None

    def forget(self, run_id: str) -> None:
        """The run ended (the ledger's holds of it are released by the budget)."""
        with self._lock:
            self._runs.pop(run_id, None)


def output_room(
    scopes: Limits,
    totals: Mapping[str, Totals],
    prompt: int,
    want: int,
    cost_of: Callable[[int, int], int],
) -> int:
    """The most output tokens (at most `want`) a reservation with `prompt` tokens may hold.

    `prompt` is the counted prompt (margin applied); `cost_of(prompt, output)` is the
    reservation's priced cost in nano-dollars. Raises BudgetExceeded when the prompt alone, or
    the prompt plus one output token, does not fit a cap.
    """
    room = want
    prompt_cost = cost_of(prompt, 0)
    for name, limits in scopes:
        view = totals[name]
        for metric, cap in limits.items():
            committed = view.committed(metric)
            if metric in PROMPT_METRICS:
                need = prompt_cost if metric == "cost_usd" else prompt
                # Reaching a token cap exactly leaves no output; a cost cap is left to the
                # output's price below (a free model's output fits a cap its prompt reached).
                exact = metric not in ("input_tokens", "cost_usd") and committed + need == cap
                if committed + need > cap or exact:
                    raise _no_room(name, metric, cap, committed, need)
            if metric == "output_tokens":
                if committed >= cap:
                    raise _no_room(name, metric, cap, committed, 0)
                room = min(room, cap - committed)
            elif metric == "total_tokens":
                room = min(room, cap - committed - prompt)
            elif metric == "cost_usd":
                room = min(room, _affordable(cap - committed, prompt, room, cost_of))
                if room < 1:  # the prompt fits, but not one output token with it
                    raise _no_room(name, metric, cap, committed, prompt_cost)
    return room


def _affordable(left: int, prompt: int, upper: int, cost_of: Callable[[int, int], int]) -> int:
    """The most output tokens (≤ upper) whose reservation costs at most `left` nano-dollars."""
    per_token = (cost_of(prompt, 1_000_000) - cost_of(prompt, 0)) / 1_000_000
    if per_token <= 0:
        return upper  # output is free (an unpriced model): cost does not limit it
    guess = min(upper, max(math.floor((left - cost_of(prompt, 0)) / per_token), 0))
    while guess > 0 and cost_of(prompt, guess) > left:  # rounding: step down to what fits
        guess -= 1
    return guess


def _no_room(scope: str, metric: str, cap: int, committed: int, need: int) -> BudgetExceeded:
    def fmt(value: int) -> str:
        return f"${value / NANO_USD:.6f}" if metric == "cost_usd" else f"{value} tokens"

    what = "this prompt's cost" if metric == "cost_usd" else "this prompt"
    if metric != "output_tokens" and need >= cap:
        detail = (
            f"the cap ({fmt(cap)}) is smaller than {what} (~{fmt(need)}, with no output): "
            "no model call with this prompt can fit"
        )
    else:
        detail = (
            f"spent + reserved {fmt(committed)} + {what} {fmt(need)} leaves no room for "
            f"output under the cap {fmt(cap)}"
        )
    return BudgetExceeded(f"{scope}:{metric}", detail)

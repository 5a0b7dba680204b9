"""How much output a model reservation can hold: the rest of every token and cost cap.

With no `max_tokens` from the caller, the node context asks the budget for the largest output
that fits (`StandardBudget.fit_output`) and sends that as `max_tokens`, so the reservation is
a true worst case and a small cap is not refused on the adapter's 4,096 default. A cap that
cannot even hold the prompt is reported here, before any call, naming the cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from loomgraph.governance.ledger import NANO_USD, Totals
from loomgraph.protocols import BudgetExceeded

PROMPT_METRICS = ("input_tokens", "total_tokens", "cost_usd")


def output_room(
    scopes: list[tuple[str, dict[str, int]]],
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
                if committed + need > cap or (metric != "input_tokens" and committed + need == cap):
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

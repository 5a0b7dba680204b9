"""How a usage becomes ledger amounts (token and call counts, cost in nano-dollars), what a
reservation holds at worst, and which cap it would pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace

from loomgraph.governance.caps import LARGEST_CAP
from loomgraph.governance.ledger import NANO_USD, Totals
from loomgraph.protocols import BudgetExceeded, Reservation, Usage

__all__ = [
    "counts_of",
    "detail_of",
    "metrics_of",
    "priced_usage",
    "refuse_past_caps",
    "worst_case_of",
]

Limits = list[tuple[str, dict[str, int]]]
"""The capped scopes a reservation counts against, each with its caps."""


def worst_case_of(
    reservation: Reservation, input_margin: float, cost: Callable[[Usage], float]
) -> dict[str, int]:
    """What a reservation holds in the ledger: its prompt times `input_margin`, its output, its
    counts, and the dearest `cost` of those tokens (a prompt token may be billed as input,
    cache write or cache read), at least the amount's own cost."""
    amount = reservation.amount
    prompt = math.ceil(amount.prompt_tokens * input_margin)
    output = amount.output_tokens
    tokens = Usage(input_tokens=prompt, output_tokens=output)
    dearest = 0.0
    if prompt or output:
        dearest = max(
            cost(tokens),
            cost(Usage(cache_write_tokens=prompt, output_tokens=output)),
            cost(Usage(cache_read_tokens=prompt, output_tokens=output)),
        )
    dearest = max(dearest, float(amount.cost_usd))
    return metrics_of(tokens, dearest, counts_of(reservation, amount))


def refuse_past_caps(
    scopes: Limits, totals: Mapping[str, Totals], amounts: Mapping[str, int]
) -> None:
    """Raise BudgetExceeded for the first cap `amounts` would take past its limit
    (spent + reserved + this > cap), naming it."""
    for name, limits in scopes:
        view = totals[name]
        for metric, cap in limits.items():
            need = amounts.get(metric, 0)
            if need > 0 and view.committed(metric) + need > cap:
                raise BudgetExceeded(f"{name}:{metric}", detail_of(metric, view, need, cap))


def counts_of(reservation: Reservation, usage: Usage) -> dict[str, int]:
    """Calls and visits: as `usage` states them, else as the reservation's kind implies."""
    reserved = reservation.amount
    default_model = 1 if reservation.kind == "model" else 0
    default_tool = 1 if reservation.kind == "tool" else 0
    return {
        "model_calls": usage.model_calls or reserved.model_calls or default_model,
        "tool_calls": usage.tool_calls or reserved.tool_calls or default_tool,
        "node_visits": 1 if reservation.kind == "node" else 0,
    }


def metrics_of(usage: Usage, cost: float, counts: Mapping[str, int]) -> dict[str, int]:
    """The ledger amounts of a usage priced at `cost` (zeros left out)."""
    prompt, output = usage.prompt_tokens, usage.output_tokens
    nano = max(cost, 0.0) * NANO_USD
    out = {
        "input_tokens": prompt,
        "output_tokens": output,
        "total_tokens": prompt + output,
        # Round cost up: a reservation never holds less than the price. A cost past every
        # cap (too large for a float, or NaN) counts as one nano-dollar more than the
        # largest cap: refused, or blocking once spent, instead of an OverflowError.
        "cost_usd": math.ceil(nano - 1e-6) if nano <= LARGEST_CAP else LARGEST_CAP + 1,
        **counts,
    }
    return {k: v for k, v in out.items() if v}


def priced_usage(amount: Usage, metrics: Mapping[str, int]) -> Usage:
    """The reservation's amount as returned to the caller, with its priced cost."""
    return replace(amount, cost_usd=metrics.get("cost_usd", 0) / NANO_USD)


def detail_of(metric: str, totals: Totals, need: int, cap: int) -> str:
    """Why a reservation does not fit under one cap, in words."""

    def fmt(value: int) -> str:
        return f"${value / NANO_USD:.6f}" if metric == "cost_usd" else str(value)

    return (
        f"spent {fmt(totals.spent.get(metric, 0))} + reserved "
        f"{fmt(totals.reserved.get(metric, 0))} + this {fmt(need)} > cap {fmt(cap)}"
    )

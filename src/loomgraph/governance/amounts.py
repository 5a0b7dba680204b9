"""How a usage becomes ledger amounts: token and call counts, and cost in nano-dollars."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from loomgraph.governance.ledger import NANO_USD, Totals
from loomgraph.protocols import Reservation, Usage

__all__ = ["counts_of", "detail_of", "metrics_of", "priced_usage"]


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
    out = {
        "input_tokens": prompt,
        "output_tokens": output,
        "total_tokens": prompt + output,
        # Round cost up: a reservation never holds less than the price.
        "cost_usd": math.ceil(max(cost, 0.0) * NANO_USD - 1e-6),
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

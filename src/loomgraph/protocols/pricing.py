"""The price table: USD per million tokens, per model, kept in this one place.

Prices are matched by model-name prefix, longest prefix first, so `claude-sonnet-4-5-20250929`
finds `claude-sonnet-4-5` and a dated snapshot needs no entry of its own. A model that matches
nothing costs 0 (local models behind the OpenAI-compatible adapter, or a model newer than this
table): the tokens are still counted, only `cost_usd` is 0 — and a budget's cost cap refuses
such a model rather than reserve its calls at $0. Override per adapter with
`prices=` (a dict of prefix → `Price`, laid over this table, or a function of model and usage),
or for the whole process with `register_price`.

Prices are Anthropic's list prices (standard tier, not batch) as published when this table was
written; check them before relying on the figures for billing. `cache_write` is the 5-minute
cache-write rate. Long-prompt surcharges are not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeAlias

from loomgraph.protocols.usage import Usage

__all__ = [
    "DEFAULT_PRICES",
    "Price",
    "PriceOverride",
    "compute_cost",
    "price_for",
    "register_price",
    "with_cost",
]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for input, output, cache writes and cache reads."""

    input: float
    output: float
    cache_write: float = 0.0
    cache_read: float = 0.0

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_write", "cache_read"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < math.inf
            ):
                raise ValueError(
                    f"Price {name} must be a finite number of USD per million tokens, at "
                    f"least 0, not {value!r}"
                )


def _anthropic(input_: float, output: float) -> Price:
    # Anthropic's cache writes cost 1.25x input and cache reads 0.1x input, on every model.
    return Price(input_, output, round(input_ * 1.25, 6), round(input_ * 0.1, 6))


DEFAULT_PRICES: dict[str, Price] = {
    "claude-fable-5-1": Price(10.0, 50.0, 12.5, 0.25),
    "claude-fable-5": _anthropic(10.0, 50.0),
    "claude-mythos-5-1": Price(10.0, 50.0, 12.5, 0.25),
    "claude-mythos-5": _anthropic(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0, 5.0, 0.2),
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-opus-4-8": _anthropic(5.0, 25.0),
    "claude-opus-4-7": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4": _anthropic(15.0, 75.0),  # opus 4 and 4.1
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.5, 0.1),
    "claude-sonnet-5": _anthropic(2.0, 10.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),  # sonnet 4, 4.5, 4.6
    # Haiku 5.5 is priced higher for prompts over 100k tokens; this is the lower band.
    "claude-haiku-5-5": Price(0.1, 0.5, 0.125, 0.01),
    "claude-haiku-4": _anthropic(1.0, 5.0),  # haiku 4.5
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-haiku": _anthropic(0.8, 4.0),
    "claude-3-opus": _anthropic(15.0, 75.0),
    "claude-3-haiku": Price(0.25, 1.25, 0.3, 0.03),
    # loomgraph's own zero-key models (EchoModel, ScriptedModel, by their default names) bill
    # nothing: a known price of $0, so a cost cap runs on them rather than refusing them as
    # models it cannot price (a ScriptedModel named after a real model is priced as that one).
    "echo": Price(0.0, 0.0),
    "scripted": Price(0.0, 0.0),
}

PriceOverride: TypeAlias = Mapping[str, Price] | Callable[[str, Usage], float]


def register_price(prefix: str, price: Price) -> None:
    """Add or replace a process-wide price entry for models whose name starts with `prefix`."""
    DEFAULT_PRICES[prefix] = price


def price_for(model: str, table: Mapping[str, Price] | None = None) -> Price | None:
    """The price of `model`: the entry with the longest matching prefix, or None."""
    merged: dict[str, Price] = {**DEFAULT_PRICES, **(table or {})}
    best: str | None = None
    for prefix in merged:
        if model.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return merged[best] if best is not None else None


def compute_cost(model: str, usage: Usage, prices: PriceOverride | None = None) -> float:
    """USD cost of `usage` on `model`; 0.0 when the model has no price."""
    if callable(prices):
        return float(prices(model, usage))
    price = price_for(model, prices)
    if price is None:
        return 0.0
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read
    )
    return total / 1_000_000


def with_cost(model: str, usage: Usage, prices: PriceOverride | None = None) -> Usage:
    """A copy of `usage` with `cost_usd` set from its token counts."""
    return replace(usage, cost_usd=compute_cost(model, usage, prices))

"""`Usage`: token counts, calls and cost of one or more model or tool calls, as one value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "MAX_REPORTED_TOKENS",
    "USAGE_FIELDS",
    "Usage",
    "estimate_output_tokens",
    "estimate_prompt_tokens",
    "floor_usage",
]

CHARS_PER_TOKEN = 4
"""The one token estimate loomgraph makes without a tokenizer: about 4 characters a token."""

MAX_REPORTED_TOKENS = 1_000_000_000
"""The most tokens one count of one model call may report: a hundred times the largest
context window. A higher count is no real call's; charged, it would exhaust every cap at once
(or overflow a ledger's integer columns)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, call counts and cost; every field defaults to zero.

    Usages add up with `+`. `to_dict()` is the JSON shape the journal, events and the graph
    state keep (zero fields left out); `from_dict()` reads it back.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.model_calls + other.model_calls,
            self.tool_calls + other.tool_calls,
            self.cost_usd + other.cost_usd,
        )

    def with_model_calls(self, calls: int) -> Usage:
        """This usage counting `calls` model calls (what `replace` does, without its cost)."""
        return Usage(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            calls,
            self.tool_calls,
            self.cost_usd,
        )

    def __radd__(self, other: object) -> Usage:
        # `sum(usages)` starts from 0.
        if other == 0:
            return self
        return NotImplemented

    def __bool__(self) -> bool:
        """False when every field is zero (as an empty usage dict was)."""
        return any(getattr(self, name) for name in USAGE_FIELDS)

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached or not (adapters report the three parts separately)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt tokens (cached or not) plus output tokens."""
        return self.prompt_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: a dict of the non-zero fields."""
        out: dict[str, Any] = {}
        for name in USAGE_FIELDS:
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, trusted: bool = False) -> Usage:
        """A usage from its JSON shape; missing keys are zero.

        Unknown keys and non-numbers are refused with a ValueError, unless `trusted` (data
        loomgraph wrote itself, such as journal rows): then nothing is checked, and a key
        that is not a field (an old journal may hold one a node wrote) is passed over.
        """
        if trusted:
            return cls(**{k: v for k, v in data.items() if k in _FIELD_SET})
        unknown = sorted(set(data) - _FIELD_SET)
        if unknown:
            raise ValueError(
                f"unknown usage key(s) {', '.join(map(repr, unknown))}; "
                f"a usage has {', '.join(USAGE_FIELDS)}"
            )
        return cls(**data).check()

    @classmethod
    def reported(cls, value: Any) -> Usage:
        """A usage reported from outside loomgraph (a model adapter's): a Usage or its JSON
        shape, None for none; ValueError when it is neither or holds an impossible count."""
        if value is None:
            return cls()
        if type(value) is dict:  # the common case, before the slower ABC check below
            usage = cls.from_dict(value)
        elif isinstance(value, Usage):
            usage = value.check()
        elif isinstance(value, Mapping):
            usage = cls.from_dict(value)
        else:
            raise ValueError(f"a usage is a Usage or a mapping, not {type(value).__name__}")
        tokens = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        if max(tokens) > MAX_REPORTED_TOKENS:
            name = next(n for n in _TOKEN_FIELDS if getattr(usage, n) > MAX_REPORTED_TOKENS)
            raise ValueError(
                f"usage {name!r} is {getattr(usage, name):,} tokens, over the "
                f"{MAX_REPORTED_TOKENS:,} no one call can reach"
            )
        return usage

    def check(self) -> Usage:
        """This usage, when every count is a finite number of at least 0 and every count but
        `cost_usd` a whole one; else ValueError naming the first that is not (a negative or
        NaN count would lower what a run is charged, or switch a cap off)."""
        counts = (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.model_calls,
            self.tool_calls,
        )
        cost = self.cost_usd
        # The common case, checked at once: whole counts of at least 0, a finite cost.
        if (
            set(map(type, counts)) == _INT
            and min(counts) >= 0
            and type(cost) in _NUMBER
            and 0 <= cost < math.inf
        ):
            return self
        for name in USAGE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"usage {name!r} must be a number, not {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"usage {name!r} must be finite and at least 0, not {value!r}")
            if name != "cost_usd" and value != int(value):
                raise ValueError(f"usage {name!r} must be a whole number, not {value!r}")
        return self


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_INT: set[type] = {int}
_NUMBER = (int, float)
_FIELD_SET = frozenset(USAGE_FIELDS)
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def estimate_prompt_tokens(prompt_chars: int) -> int:
    """A prompt's tokens from its size: characters / 4, plus one (what a reservation holds)."""
    return prompt_chars // CHARS_PER_TOKEN + 1


def estimate_output_tokens(streamed: str | int, deltas: int) -> int:
    """Output tokens of what was streamed: characters / 4 rounded up, never below `deltas`.

    `streamed` is the text and tool-call JSON received (or its length); `deltas` the number
    of stream events that carried some of it: a provider sends at least one token an event.
    """
    chars = streamed if isinstance(streamed, int) else len(streamed)
    return max(-(-chars // CHARS_PER_TOKEN), deltas)


def floor_usage(usage: Usage, *, prompt_tokens: int, output_tokens: int) -> Usage:
    """`usage` raised to an estimate where the provider reported less (a cut stream).

    The prompt estimate is used only when no prompt tokens were reported at all (a reported
    count is the provider's own, exact); output is the larger of the two. When anything was
    raised, `cost_usd` is cleared so it is priced again from the tokens.
    """
    raised = usage
    if usage.prompt_tokens == 0 and prompt_tokens > 0:
        raised = replace(raised, input_tokens=prompt_tokens)
    if usage.output_tokens < output_tokens:
        raised = replace(raised, output_tokens=output_tokens)
    return raised if raised == usage else replace(raised, cost_usd=0.0)

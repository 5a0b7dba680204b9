"""Budget configuration: the caps of one scope (`Caps`), and `BudgetConfig` — global caps, caps
per user, the warning threshold and how reservations are priced — and the typed errors of a
configuration that cannot be honoured (`BudgetConfigError`, `UnpricedModel`).

What cannot be honoured is refused where it is written, not as an OverflowError at every
reservation: caps are integers in the ledger (cost in nano-dollars), at most `LARGEST_CAP`
(2**63 - 1, a 64-bit integer: about $9.2 billion, or 9.2e18 tokens), which SQL readers of a
ledger and the float arithmetic that sizes a call both hold. A bigger cap could never bind
anyway; `None` is how to write "no cap". `input_margin` is a finite factor of at most
`MAX_INPUT_MARGIN`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from loomgraph.errors import LoomgraphError
from loomgraph.governance.ledger import METRICS, NANO_USD
from loomgraph.protocols.pricing import PriceOverride, price_for

__all__ = [
    "ANONYMOUS",
    "LARGEST_CAP",
    "MAX_INPUT_MARGIN",
    "BudgetConfig",
    "BudgetConfigError",
    "BudgetWarning",
    "Caps",
    "UnpricedModel",
    "check_priced",
    "user_scope",
]

CAP_NAMES = (*METRICS, "wall_clock_s")
ANONYMOUS = "(anonymous)"
LARGEST_CAP = 2**63 - 1
"""The largest ledger cap (tokens, calls, or nano-dollars of cost): a 64-bit integer's range."""
MAX_INPUT_MARGIN = 100.0
"""The largest `input_margin`: a tokenizer counting a token a byte of 4-byte characters is 16
times the ≈4-characters-a-token estimate; 100 leaves room for hidden prompts on tiny ones."""


class BudgetConfigError(LoomgraphError, ValueError):
    """A budget configuration that cannot be honoured; `field` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class UnpricedModel(BudgetConfigError):
    """A cost cap with a model the price table does not know and no `prices=` to price it:
    its calls would be reserved at $0 and the cap would never bind."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            "model",
            f"a cost_usd cap cannot price model {model!r}: it matches no entry of the price "
            f"table (loomgraph.protocols.pricing), so its calls would be reserved at $0. Give "
            f"its price with BudgetConfig(prices={{{model!r}: Price(input=..., output=...)}}) "
            "(USD per million tokens; the same prices= to the model adapter) or "
            f"register_price({model!r}, Price(...)), or cap tokens instead of cost",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Caps:
    """Upper limits for one scope; None means no cap. Cost in USD, wall clock in seconds."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    model_calls: int | None = None
    tool_calls: int | None = None
    node_visits: int | None = None
    wall_clock_s: float | None = None

    def __post_init__(self) -> None:
        for name in CAP_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            counted = name not in _AMOUNTS  # a count of tokens, calls or visits
            if (
                isinstance(value, bool)
                or not isinstance(value, int if counted else int | float)
                or value < 0
                or not math.isfinite(value)
            ):
                what = "a non-negative whole number" if counted else "a non-negative number"
                raise BudgetConfigError(
                    name, f"budget cap {name} must be {what} or None, not {value!r}"
                )
            scaled = value * NANO_USD if name == "cost_usd" else value  # (inf past floats)
            if name in METRICS and scaled > LARGEST_CAP:
                most = f"${LARGEST_CAP // NANO_USD:,}" if name == "cost_usd" else f"{LARGEST_CAP:,}"
                raise BudgetConfigError(
                    name,
                    f"budget cap {name}={value!r} is more than a ledger counts (at most "
                    f"{most}); leave it None for no cap",
                )

    def limits(self) -> dict[str, int]:
        """The ledger caps (cost in nano-dollars), without wall clock and unset caps."""
        out: dict[str, int] = {}
        for name in METRICS:
            value = getattr(self, name)
            if value is not None:
                out[name] = _ledger_cap(name, value)
        return out


# The caps that are amounts, not counts: a fraction of a dollar or of a second is one.
_AMOUNTS = frozenset({"cost_usd", "wall_clock_s"})


def _check_users(users: object) -> None:
    """`users` maps user ids (text, as a run's `user_id` is) to Caps; BudgetConfigError."""
    if not isinstance(users, Mapping):
        raise BudgetConfigError(
            "users", f"users maps user ids to Caps ({{'alice': Caps(...)}}), not {users!r}"
        )
    for user_id in users:
        if not isinstance(user_id, str):
            raise BudgetConfigError(
                "users",
                f"users is keyed by user ids, which are text: {user_id!r} "
                f"({type(user_id).__name__}) would never match a run's user_id",
            )


def _ledger_cap(name: str, value: float) -> int:
    """A cap as the ledger counts it (cost in nano-dollars), rounded down: a cap never admits
    more than the user wrote."""
    return math.floor(value * NANO_USD + 1e-6) if name == "cost_usd" else int(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetConfig(Caps):
    """Global caps (the fields of `Caps`), caps per user, warning threshold and pricing.

    The top-level caps hold for all runs sharing the ledger together; `per_user` caps hold for
    each user separately (runs without a user count as one user, `(anonymous)`); `users`
    gives some users caps of their own instead of `per_user`. `hold_wait_s` is how long a
    reservation refused only because other runs hold the room waits for their holds to
    end (never past the run's deadline; 0 refuses at once), see `hold_wait`.
    """

    per_user: Caps | None = None
    users: Mapping[str, Caps] = field(default_factory=dict)
    warn_at: float | None = 0.8
    prices: PriceOverride | None = None
    model: str | None = None
    input_margin: float = 1.0
    default_max_tokens: int | None = 4096
    hold_wait_s: float = 30.0

    def __post_init__(self) -> None:
        Caps.__post_init__(self)
        _check_users(self.users)
        given = [("per_user", self.per_user), *(("users", c) for c in self.users.values())]
        for where, caps in given:
            if caps is not None and not isinstance(caps, Caps):
                raise BudgetConfigError(
                    where, f"per-user caps must be Caps, not {type(caps).__name__}"
                )
            if isinstance(caps, BudgetConfig) and (caps.per_user or caps.users):
                raise BudgetConfigError(
                    "per_user", "per-user caps cannot have per-user caps of their own"
                )
        if self.warn_at is not None and not 0 < self.warn_at <= 1:
            raise BudgetConfigError(
                "warn_at", f"warn_at must be in (0, 1] or None, not {self.warn_at!r}"
            )
        if self.default_max_tokens is not None and (
            isinstance(self.default_max_tokens, bool)
            or not isinstance(self.default_max_tokens, int)
            or self.default_max_tokens < 1
        ):
            wrong = self.default_max_tokens
            raise BudgetConfigError(
                "default_max_tokens",
                f"default_max_tokens must be a positive int or None, not {wrong!r}",
            )
        wait = self.hold_wait_s
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < math.inf:
            raise BudgetConfigError(
                "hold_wait_s", f"hold_wait_s must be a non-negative number of seconds, not {wait!r}"
            )
        margin = self.input_margin
        if (
            isinstance(margin, bool)
            or not isinstance(margin, int | float)
            or not 1 <= margin <= MAX_INPUT_MARGIN
        ):
            # An infinite (or absurd) margin would turn every prompt into an amount no
            # arithmetic can hold: refused here, not as an OverflowError at each reservation.
            raise BudgetConfigError(
                "input_margin",
                f"input_margin must be a number from 1 to {MAX_INPUT_MARGIN:g}, not {margin!r}",
            )

    def caps_cost(self) -> bool:
        """Whether any cap of this config is a cost cap: global, per user or a user's own."""
        return any(
            caps is not None and caps.cost_usd is not None
            for caps in (self, self.per_user, *self.users.values())
        )

    def user_caps(self, user_id: str | None) -> Caps | None:
        """The caps that hold for one user, or None."""
        if user_id is not None and user_id in self.users:
            return self.users[user_id]
        return self.per_user

    def deadline_for(self, start: float, user_id: str | None = None) -> float | None:
        """A run's absolute deadline: start + the smallest wall_clock_s that applies."""
        found = self.wall_clock_cap(user_id)
        return None if found is None else start + found[1]

    def wall_clock_cap(self, user_id: str | None) -> tuple[str, float] | None:
        """The binding wall-clock cap as (cap name, seconds), or None."""
        candidates = []
        if self.wall_clock_s is not None:
            candidates.append(("global:wall_clock_s", self.wall_clock_s))
        caps = self.user_caps(user_id)
        if caps is not None and caps.wall_clock_s is not None:
            candidates.append((f"{user_scope(user_id)}:wall_clock_s", caps.wall_clock_s))
        return min(candidates, key=lambda c: c[1]) if candidates else None


def check_priced(model: str | None, prices: PriceOverride | None) -> None:
    """Raise unless a cost cap can price `model`'s calls: with a price function, or a model
    that the price table (with `prices` laid over it) knows. A cost cap refuses rather than
    reserve a call it cannot price at $0."""
    if callable(prices):
        return
    if model is None:
        raise BudgetConfigError(
            "model",
            "a cost_usd cap needs BudgetConfig(model=...) (or budget.model) "
            "to price model reservations",
        )
    if price_for(model, prices) is None:
        raise UnpricedModel(model)


@dataclass(frozen=True, slots=True)
class BudgetWarning:
    """A cap passed the warning threshold: `cap` is `scope:metric`, e.g. `user:alice:cost_usd`."""

    cap: str
    fraction: float
    run_id: str
    user_id: str | None


WarningCallback = Callable[[BudgetWarning], Awaitable[None] | None]


def user_scope(user_id: str | None) -> str:
    """The ledger scope of a user's caps: `user:<id>`, and `user:(anonymous)` for runs
    without a user. An id starting with `(` gets one more, so no user's scope is the
    anonymous one (a user named `(anonymous)` is `user:((anonymous)`)."""
    if user_id is None:
        return f"user:{ANONYMOUS}"
    return f"user:({user_id}" if user_id.startswith("(") else f"user:{user_id}"

"""Budget limits as configured: a cap leaves the model's own output limit alone, a config the
budget accepts never crashes a reservation, and a cost cap refuses a model it cannot price."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fake_servers import FakeServer, Reply, Sleeps, sse_message
from loomgraph import Agent, tool
from loomgraph.governance import NANO_USD, BudgetConfig, Caps, StandardBudget
from loomgraph.governance.budget import BudgetConfigError, UnpricedModel
from loomgraph.governance.caps import LARGEST_CAP
from loomgraph.models import EchoModel, ScriptedModel
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import BudgetExceeded, BudgetScope, ModelRequest, Reservation, Usage
from loomgraph.protocols.pricing import DEFAULT_PRICES, Price, register_price

PRICED = "claude-sonnet-4-5"
UNPRICED = "claude-sonnet-9"  # newer than the table: no prefix matches


@tool
def noop() -> str:
    """Do nothing."""
    return "ok"


def model_call(scope: BudgetScope, prompt: int = 10, out: int = 10) -> Reservation:
    return Reservation(scope, "model", Usage(input_tokens=prompt, output_tokens=out))


# ------------------------------------------------------------------ the model's own limit


async def test_a_capped_budget_keeps_the_models_own_max_tokens() -> None:
    asked: list[int | None] = []

    def script(request: ModelRequest) -> str:
        asked.append(request.max_tokens)
        return "done"

    model = ScriptedModel(script)
    model.max_tokens = 16_000  # type: ignore[attr-defined]  # the adapter's own limit
    budget = StandardBudget(BudgetConfig(tool_calls=100, default_max_tokens=None))
    result = await Agent("x", model=model, tools=[noop], budget=budget).run("hi")
    assert result.status == "completed", result.reason
    assert asked == [16_000]
    scope = BudgetScope("r-default", None)
    wide = StandardBudget(BudgetConfig(total_tokens=10**9, default_max_tokens=20_000))
    assert await wide.fit_output(scope, 100, None) == 20_000


async def test_4096_is_the_output_limit_only_when_neither_the_model_nor_the_config_gives_one() -> (
    None
):
    scope = BudgetScope("r", None)
    neither = StandardBudget(BudgetConfig(output_tokens=10**6, default_max_tokens=None))
    assert await neither.fit_output(scope, 10, None) == 4096
    model_only = StandardBudget(BudgetConfig(output_tokens=10**6, default_max_tokens=None))
    assert await model_only.fit_output(scope, 10, 32_000) == 32_000
    both = StandardBudget(BudgetConfig(output_tokens=10**6, default_max_tokens=20_000))
    assert await both.fit_output(scope, 10, 16_000) == 16_000  # the smaller
    assert await both.fit_output(scope, 10, 64_000) == 20_000


async def test_the_output_held_is_the_max_tokens_returned_and_the_call_takes_it_over() -> None:
    scope = BudgetScope("r-held", "alice")
    config = BudgetConfig(per_user=Caps(output_tokens=10**6), default_max_tokens=None)
    budget = StandardBudget(config)
    room = await budget.fit_output(scope, 100, 16_000)
    assert room == 16_000
    held = await budget.totals("user:alice")
    assert held.reserved.get("output_tokens") == 16_000
    # The call's reservation of that worst case is the same hold, not a second one.
    reservation = await budget.reserve(model_call(scope, prompt=100, out=room))
    assert (await budget.totals("user:alice")).reserved.get("output_tokens") == 16_000
    await budget.settle(reservation, Usage(input_tokens=100, output_tokens=15_000))
    totals = await budget.totals("user:alice")
    assert totals.spent["output_tokens"] == 15_000 and not totals.reserved.get("output_tokens")


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


async def test_the_provider_is_asked_for_the_adapters_own_limit_under_a_tool_call_cap(
    server: FakeServer,
) -> None:
    server.add(Reply(events=sse_message([("text", ["ok"])], input_tokens=20, output_tokens=2)))
    model = AnthropicModel(
        PRICED,
        api_key="k",
        base_url=server.url,
        max_tokens=16_000,
        retry_policy=RetryPolicy(sleep=Sleeps()),
    )
    caps = Caps(tool_calls=5, output_tokens=10**6)
    budget = StandardBudget(BudgetConfig(per_user=caps, default_max_tokens=None))
    result = await Agent("x", model=model, budget=budget).run("hi", user_id="u")
    assert result.status == "completed", result.reason
    assert server.bodies[0]["max_tokens"] == 16_000  # not 4096
    assert (await budget.totals("user:u")).spent["output_tokens"] == 2


@given(
    limit=st.none() | st.integers(1, 200_000),
    default=st.none() | st.integers(1, 200_000),
    cap=st.none() | st.integers(200, 300_000),
    spent=st.integers(0, 100),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fit_output_never_passes_a_limit_and_holds_what_it_returns(
    limit: int | None, default: int | None, cap: int | None, spent: int
) -> None:
    asyncio.run(_fit_and_hold(limit, default, cap, spent))


async def _fit_and_hold(
    limit: int | None, default: int | None, cap: int | None, spent: int
) -> None:
    scope = BudgetScope("r-prop", None)
    budget = StandardBudget(
        BudgetConfig(output_tokens=cap, tool_calls=10, default_max_tokens=default)
    )
    if spent:
        earlier = await budget.reserve(model_call(scope, out=spent))
        await budget.settle(earlier, Usage(output_tokens=spent))
    room = await budget.fit_output(scope, 50, limit)
    want = min([x for x in (limit, default) if x] or [4096])  # 4096: only when neither
    assert room == (want if cap is None else min(want, cap - spent))
    held = (await budget.totals()).reserved.get("output_tokens", 0)
    assert held == room and (cap is None or spent + held <= cap)


# ------------------------------------------------------------------ configs that crashed


async def test_a_config_the_budget_accepts_never_crashes_a_reservation() -> None:
    scope = BudgetScope("r-huge", "alice")
    problems = []
    makers: list[tuple[str, Callable[[], BudgetConfig]]] = [
        ("cost_usd=sys.float_info.max", lambda: BudgetConfig(cost_usd=sys.float_info.max)),
        ("per_user cost_usd=1e300", lambda: BudgetConfig(per_user=Caps(cost_usd=1e300))),
        ("input_margin=inf", lambda: BudgetConfig(total_tokens=100, input_margin=float("inf"))),
    ]
    for name, make in makers:
        try:
            config = make()
        except ValueError:
            continue
        budget = StandardBudget(config)
        budget.model = PRICED
        try:
            await budget.reserve(model_call(scope))
        except BudgetExceeded:
            pass
        except Exception as err:
            problems.append(f"{name}: accepted, then reserve raised {type(err).__name__}: {err}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("cost_usd", lambda: BudgetConfig(cost_usd=sys.float_info.max)),
        ("cost_usd", lambda: BudgetConfig(per_user=Caps(cost_usd=1e300))),
        ("cost_usd", lambda: BudgetConfig(users={"bob": Caps(cost_usd=1e10)})),
        ("total_tokens", lambda: BudgetConfig(total_tokens=2**63)),
        ("output_tokens", lambda: Caps(output_tokens=1e19)),  # type: ignore[arg-type]
        ("input_margin", lambda: BudgetConfig(input_margin=float("inf"))),
        ("input_margin", lambda: BudgetConfig(input_margin=float("nan"))),
        ("input_margin", lambda: BudgetConfig(input_margin=101.0)),
        ("input_margin", lambda: BudgetConfig(input_margin=0.5)),
        ("input_margin", lambda: BudgetConfig(input_margin="2")),  # type: ignore[arg-type]
        ("input_margin", lambda: BudgetConfig(input_margin=True)),
    ],
)
def test_a_config_that_cannot_be_honoured_is_refused_naming_its_field(
    field: str, make: Callable[[], object]
) -> None:
    with pytest.raises(BudgetConfigError) as info:
        make()
    assert info.value.field == field and field in str(info.value)
    assert isinstance(info.value, ValueError)  # what callers caught before


async def test_the_largest_caps_a_ledger_counts_are_accepted_and_work() -> None:
    scope = BudgetScope("r-largest", "alice")
    largest_cost = LARGEST_CAP // NANO_USD  # whole dollars
    config = BudgetConfig(
        model=PRICED,
        cost_usd=largest_cost,
        per_user=Caps(total_tokens=LARGEST_CAP, output_tokens=LARGEST_CAP),
        input_margin=100.0,
        default_max_tokens=None,
    )
    assert config.limits()["cost_usd"] <= LARGEST_CAP
    budget = StandardBudget(config)
    room = await budget.fit_output(scope, 1_000_000, 10**9)
    assert room == 10**9
    held = await budget.reserve(model_call(scope, prompt=1_000_000, out=room))
    await budget.settle(held, Usage(input_tokens=1_000_000, output_tokens=10))
    assert (await budget.totals("user:alice")).spent["output_tokens"] == 10


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -1.0, True, "3"])
def test_a_price_that_cannot_be_charged_is_refused_naming_its_field(bad: object) -> None:
    with pytest.raises(ValueError, match="Price output"):
        Price(1.0, bad)  # type: ignore[arg-type]


async def test_a_cost_past_every_cap_is_refused_not_an_overflow() -> None:
    # 1e300 dollars a million tokens: a real call's cost is more than a float holds.
    prices = {"dear": Price(1e300, 1e300)}
    scope = BudgetScope("r-dear", "alice")
    capped = StandardBudget(BudgetConfig(cost_usd=5.0, model="dear", prices=prices))
    with pytest.raises(BudgetExceeded, match="cost_usd"):
        await capped.reserve(model_call(scope, prompt=10**6, out=10**6))
    with pytest.raises(BudgetExceeded, match="cost_usd"):
        await capped.fit_output(scope, 10**6, None)
    # No cost cap: the call is held and charged, and its cost blocks every later cost cap.
    tokens = StandardBudget(BudgetConfig(total_tokens=10**8, model="dear", prices=prices))
    held = await tokens.reserve(model_call(scope, prompt=10**6, out=10**6))
    await tokens.settle(held, Usage(input_tokens=10**6, output_tokens=10**6))
    assert (await tokens.totals()).spent["cost_usd"] == LARGEST_CAP + 1


caps_values = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 2**70)


@given(
    cost=caps_values,
    user_cost=caps_values,
    total=caps_values,
    output=caps_values,
    margin=st.floats(allow_nan=True, allow_infinity=True),
    prompt=st.integers(0, 4_000_000),
    limit=st.none() | st.integers(1, 10**9),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_config_is_refused_at_once_or_reserves_without_crashing(
    cost: Any, user_cost: Any, total: Any, output: Any, margin: float, prompt: int, limit: Any
) -> None:
    try:
        config = BudgetConfig(
            model=PRICED,
            cost_usd=cost,
            total_tokens=total,
            per_user=Caps(cost_usd=user_cost, output_tokens=output),
            input_margin=margin,
            hold_wait_s=0,
        )
    except BudgetConfigError:
        return
    asyncio.run(_reserve_on(StandardBudget(config), prompt, limit))


async def _reserve_on(budget: StandardBudget, prompt: int, limit: int | None) -> None:
    scope = BudgetScope("r-any", "alice")
    try:
        room = await budget.fit_output(scope, prompt, limit)
        held = await budget.reserve(model_call(scope, prompt=prompt, out=room))
        await budget.settle(held, Usage(input_tokens=prompt, output_tokens=room))
        await budget.reserve(model_call(scope, prompt=prompt, out=1))
    except BudgetExceeded:
        pass
    for name, limits in budget.scopes(scope):
        totals = await budget.totals(name)
        for metric, cap in limits.items():
            assert totals.committed(metric) <= cap, (name, metric)


# ------------------------------------------------------------------ unpriced models


async def test_a_cost_cap_on_a_model_without_a_price_refuses_to_reserve() -> None:
    budget = StandardBudget(BudgetConfig(per_user=Caps(cost_usd=1.0), model=UNPRICED))
    scope = BudgetScope("r-unpriced", "alice")
    big = Usage(input_tokens=1_000_000, output_tokens=100_000)
    refused = None
    for _ in range(3):
        try:
            held = await budget.reserve(Reservation(scope, "model", big))
        except (ValueError, BudgetExceeded) as err:
            refused = err
            break
        await budget.settle(
            held, Usage(input_tokens=1_000_000, output_tokens=100_000, cost_usd=4.5)
        )
    spent = (await budget.totals("user:alice")).spent.get("cost_usd", 0) / 1e9
    assert refused is not None and spent <= 1.0, (refused, spent)


async def test_the_refusal_names_the_model_and_how_to_price_it() -> None:
    budget = StandardBudget(BudgetConfig(per_user=Caps(cost_usd=1.0), model=UNPRICED))
    scope = BudgetScope("r-named", "alice")
    for attempt in (budget.reserve(model_call(scope)), budget.fit_output(scope, 10, None)):
        with pytest.raises(UnpricedModel) as info:
            await attempt
        err = info.value
        assert err.model == UNPRICED and err.field == "model"
        assert UNPRICED in str(err) and "prices=" in str(err) and "register_price" in str(err)
        assert isinstance(err, BudgetConfigError) and isinstance(err, ValueError)
    assert await budget.ledger.holds() == []
    # Priced with `prices=` (a table entry or a function), the same cap binds.
    table = {UNPRICED: Price(3.0, 15.0)}
    priced = StandardBudget(BudgetConfig(per_user=Caps(cost_usd=1.0), model=UNPRICED, prices=table))
    with pytest.raises(BudgetExceeded, match="user:alice:cost_usd"):
        await priced.reserve(model_call(scope, prompt=1_000_000, out=100_000))  # $4.5
    assert (await priced.reserve(model_call(scope, prompt=1000, out=100))).amount.cost_usd > 0
    by_function = StandardBudget(
        BudgetConfig(per_user=Caps(cost_usd=1.0), model=UNPRICED, prices=lambda m, u: 0.6)
    )
    await by_function.reserve(model_call(scope))
    with pytest.raises(BudgetExceeded, match="cost_usd"):
        await by_function.reserve(model_call(scope))  # 0.6 + 0.6 > 1


async def test_an_agent_with_a_cost_cap_and_an_unpriced_model_is_refused_when_made() -> None:
    called: list[int] = []

    def script(request: ModelRequest) -> str:
        called.append(1)
        return "never"

    for config in (
        BudgetConfig(cost_usd=1.0),
        BudgetConfig(per_user=Caps(cost_usd=1.0)),
        BudgetConfig(users={"bob": Caps(cost_usd=1.0)}),
    ):
        model = ScriptedModel(script, name="my-local-model")
        with pytest.raises(UnpricedModel, match="'my-local-model'"):
            Agent("x", model=model, budget=StandardBudget(config))
    assert called == []
    # loomgraph's own fakes bill nothing: a known price, so a cost cap runs on them.
    fake = StandardBudget(BudgetConfig(per_user=Caps(cost_usd=1.0)))
    assert (await Agent("x", model=EchoModel(), budget=fake).run("hi")).status == "completed"
    # Token caps alone need no price: the same model runs under them.
    turns = [{"text": "done", "usage": {"input_tokens": 10, "output_tokens": 2}}]
    budget = StandardBudget(BudgetConfig(per_user=Caps(total_tokens=10_000, tool_calls=3)))
    model = ScriptedModel(turns, name="my-local-model")
    result = await Agent("x", model=model, budget=budget).run("hi", user_id="u")
    assert result.status == "completed", result.reason
    assert (await budget.totals("user:u")).spent["total_tokens"] == 12
    assert math.isclose(result.usage.cost_usd, 0.0)


async def test_a_registered_price_makes_the_cost_cap_bind() -> None:
    prefix = "test-budget-limits-model"
    scope = BudgetScope("r-registered", "alice")
    budget = StandardBudget(BudgetConfig(cost_usd=1.0, model=f"{prefix}-v1"))
    with pytest.raises(UnpricedModel):
        await budget.reserve(model_call(scope))
    register_price(prefix, Price(3.0, 15.0))
    try:
        with pytest.raises(BudgetExceeded, match="global:cost_usd"):
            await budget.reserve(model_call(scope, prompt=1_000_000, out=100_000))
    finally:
        del DEFAULT_PRICES[prefix]


@pytest.mark.parametrize("model", ["echo", "scripted"])
async def test_a_cost_cap_of_zero_lets_a_free_model_run(model: str) -> None:
    # The free test models cost $0, and 0 fits a cap of 0: the prompt check refused a cost
    # that reached the cap exactly ("the cap ($0.000000) is smaller than this prompt's cost
    # (~$0.000000)"), which for a free model leaves all the room its output needs.
    budget = StandardBudget(BudgetConfig(cost_usd=0.0))
    chosen = ScriptedModel(["hi"]) if model == "scripted" else model
    result = await Agent("t", model=chosen, budget=budget).run("go")
    assert result.status == "completed", result.reason
    assert result.usage.cost_usd == 0

"""A run that stops for approvals and is resumed is charged the node visits of the same run
never stopped: a resumed run ends as an uninterrupted one, under a `node_visits` cap too.

Found by probing governance in composite graphs: each stop and resume charged visits again
— the visit that stopped (charged at the stop, then again when the resume did it), a map's
own visit (the same), and the visits a stopped branch had made before the stop (done again
from the journal on resume, and charged again) — so a run whose uninterrupted twin met its
user's `node_visits` cap ended `budget_exhausted` once a person approved its calls.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.agent.result import RunResult
from loomgraph.governance import (
    BudgetConfig,
    Caps,
    SqliteLedger,
    StandardBudget,
    StandardPermissions,
)
from loomgraph.protocols import RunStatus
from payment_plans import AGAIN, STEPS, Plan, pay, plan_model

COUNTS = ("node_visits", "model_calls", "tool_calls")


def agent(tmp: Path, plan: Plan, asking: frozenset[str], cap: int, handled: bool) -> Agent:
    ask = [f"pay(to={name})" for name in sorted(asking)]
    return Agent(
        "x",
        model=plan_model(plan),
        tools=[pay],
        architecture=plan[0],
        permissions=StandardPermissions(ask=ask),
        approval_handler=(lambda call, decision: True) if handled else None,
        budget=StandardBudget(
            BudgetConfig(per_user=Caps(node_visits=cap)), SqliteLedger(tmp / "ledger.db")
        ),
        runtime=f"sqlite:{tmp / 'journal.db'}",
    )


async def to_the_end(a: Agent) -> tuple[RunResult, int]:
    """Run, approving every request by resuming; the result and how many stops it made."""
    result, stops = await a.run("pay them", user_id="alice"), 0
    while result.status == RunStatus.AWAITING_APPROVAL:
        stops += 1
        assert stops <= len(STEPS + AGAIN), result
        result = await a.resume(result.run_id, approve=True)
    return result, stops


async def spent(a: Agent) -> dict[str, int]:
    totals = await a.deps.budget.totals("user:alice")  # type: ignore[attr-defined]
    return {count: totals.spent.get(count, 0) for count in COUNTS}


async def twins(
    tmp: Path, plan: Plan, asking: frozenset[str]
) -> tuple[dict[str, int], dict[str, int], RunResult]:
    """What the uninterrupted twin spent, what the stopped and resumed run spent, and the
    resumed run's end under a `node_visits` cap of exactly the twin's visits."""
    (tmp / "twin").mkdir()
    (tmp / "stopped").mkdir()
    (tmp / "capped").mkdir()
    async with agent(tmp / "twin", plan, asking, 10_000, handled=True) as twin:
        uninterrupted, _ = await to_the_end(twin)
        assert uninterrupted.status == RunStatus.COMPLETED, uninterrupted.reason
        wanted = await spent(twin)
    async with agent(tmp / "stopped", plan, asking, 10_000, handled=False) as stopped:
        resumed, stops = await to_the_end(stopped)
        assert resumed.status == RunStatus.COMPLETED, resumed.reason
        assert stops >= (1 if asking & set(STEPS[: plan[1]]) else 0)
        assert resumed.node_visits == uninterrupted.node_visits
        got = await spent(stopped)
    cap = wanted["node_visits"]
    async with agent(tmp / "capped", plan, asking, cap, handled=False) as capped:
        ended, _ = await to_the_end(capped)
    return wanted, got, ended


@pytest.mark.parametrize(
    "plan",
    [
        ("react", 2, False, False),
        ("plan-execute", 2, False, False),
        ("plan-execute", 3, True, False),
        ("plan-execute", 2, True, True),
        ("plan-execute", 2, False, True),
    ],
    ids=["react", "serial-plan", "parallel-plan", "parallel-twice", "serial-twice"],
)
async def test_a_run_resumed_after_approvals_is_charged_the_visits_of_its_twin(
    tmp_path: Path, plan: Plan
) -> None:
    wanted, got, ended = await twins(tmp_path, plan, frozenset(STEPS + AGAIN))
    assert got == wanted
    assert ended.status == RunStatus.COMPLETED, ended.reason


@settings(max_examples=20, deadline=None)
@given(
    plan=st.one_of(
        st.tuples(st.just("react"), st.integers(1, 3), st.just(False), st.just(False)),
        st.tuples(st.just("plan-execute"), st.integers(1, 3), st.booleans(), st.booleans()),
    ),
    asking=st.frozensets(st.sampled_from(STEPS + AGAIN)),
)
def test_stops_for_approval_never_change_what_a_run_is_charged(
    tmp_path_factory: pytest.TempPathFactory, plan: Plan, asking: frozenset[str]
) -> None:
    """Any plan (its map run once or twice), any set of calls that ask: the run resumed after
    each answer is charged what its uninterrupted twin is, and meets a cap of its visits."""
    tmp = tmp_path_factory.mktemp("twins")
    wanted, got, ended = asyncio.run(twins(tmp, plan, asking))
    assert got == wanted
    assert ended.status == RunStatus.COMPLETED, ended.reason

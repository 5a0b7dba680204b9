"""Parallel branches of one run share a small token or cost cap as serial ones do.

Found by probing governance in composite graphs: a plan-and-execute run whose steps ran one
after the other completed under a per-user token cap, while the same plan run in parallel
ended `budget_exhausted`. A model call's hold is sized to all the room the caps have left
(`fit_output`), for the few milliseconds the call lasts; a second branch's call found no
room and was refused at once, since a run never waited for its own holds — although a
sibling branch's model call ends by itself, unlike the holds on the waiting call's own
path (its node visits, the runs it was started from).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import BudgetConfig, Caps, Hooks, SqliteLedger, StandardBudget, hold_wait
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus
from loomgraph.protocols.events import BUDGET_EXCEEDED
from loomgraph.protocols.pricing import Price
from payment_plans import DONE, planner, respond

STEPS = ("ann", "bob", "cy")
PRICES = {"scripted": Price(input=1.0, output=3.0)}


@tool
def pay(to: str) -> str:
    """Pay someone."""
    return f"paid {to}"


def planning(tmp: Path, parallel: bool, caps: Caps) -> Agent:
    config = BudgetConfig(per_user=caps, model="scripted", prices=PRICES, hold_wait_s=30)
    return Agent(
        "x",
        model=planner(STEPS, parallel),
        tools=[pay],
        architecture="plan-execute",
        budget=StandardBudget(config, SqliteLedger(tmp / "ledger.db")),
    )


async def spent_serially(tmp: Path, metric: str) -> int:
    """What the serial plan spends of `metric` under a cap it never comes near."""
    async with planning(tmp, False, Caps(**{metric: 1_000_000})) as serial:
        done = await serial.run("pay them", user_id="alice")
        assert done.status == RunStatus.COMPLETED, done.reason
        totals = await serial.deps.budget.totals("user:alice")  # type: ignore[attr-defined]
        return int(totals.spent[metric])


@pytest.mark.parametrize("metric", ["total_tokens", "output_tokens", "cost_usd"])
async def test_parallel_steps_complete_under_a_cap_the_serial_plan_meets(
    tmp_path: Path, metric: str
) -> None:
    (tmp_path / "serial").mkdir()
    need = await spent_serially(tmp_path / "serial", metric)
    # Room for the serial plan (a call is held at its counted prompt, more than a scripted
    # turn reports) with some to spare; far less than two calls' worst cases (4,096 output
    # tokens each).
    cap: float = need + 1_000 if metric != "cost_usd" else (need + 1_000 * 3_000) / 1e9
    caps = Caps(**{metric: cap})
    for parallel in (False, True):
        (tmp_path / str(parallel)).mkdir()
        async with planning(tmp_path / str(parallel), parallel, caps) as a:
            done = await a.run("pay them", user_id="alice")
            assert done.status == RunStatus.COMPLETED, (parallel, done.reason)
            assert done.output == DONE


RELEASED: dict[str, asyncio.Event] = {}


@tool
async def slow_pay(to: str) -> str:
    """Pay someone, once the budget refused the other branch's call."""
    try:
        await asyncio.wait_for(RELEASED["refused"].wait(), 10)
    except TimeoutError:
        RELEASED["waited"].set()  # the sibling waited on this call's hold
    return f"paid {to}"


async def test_a_call_count_a_sibling_holds_is_refused_at_once(tmp_path: Path) -> None:
    """A call's hold of a count (tool calls, model calls) is always spent, never given back:
    a sibling branch refused by it has nothing to wait for, and is refused at once (it was
    kept waiting `hold_wait_s` for the hold to end, only to be refused then)."""
    RELEASED.update(refused=asyncio.Event(), waited=asyncio.Event())
    hooks = Hooks()

    @hooks.on_event
    def heard(event: Any) -> None:
        if event.kind == BUDGET_EXCEEDED:
            RELEASED["refused"].set()

    config = BudgetConfig(per_user=Caps(tool_calls=1), hold_wait_s=60)
    agent = Agent(
        "x",
        model=planner(["ann", "bob"], parallel=True, tool="slow_pay"),
        tools=[slow_pay],
        architecture="plan-execute",
        hooks=hooks,
        budget=StandardBudget(config, SqliteLedger(tmp_path / "ledger.db")),
    )
    async with agent:
        done = await agent.run("pay them", user_id="alice")
    assert done.status == RunStatus.BUDGET_EXHAUSTED, done.reason
    assert "user:alice:tool_calls" in (done.reason or "")
    assert not RELEASED["waited"].is_set()


SHARED: dict[str, Any] = {}


@tool
async def consult(q: str) -> str:
    """Ask the helper agent (on the same budget), once the sibling branch's model call holds
    the room the cap has left."""
    await asyncio.wait_for(SHARED["holding"].wait(), 10)
    inner = Agent("helper", model=ScriptedModel(["the helper says hi"]), budget=SHARED["budget"])
    result = await inner.run(q, user_id="alice")
    SHARED["inner"] = (str(result.status), result.reason)
    return f"helper: {result.output}"


def helped(parallel: bool) -> ScriptedModel:
    """Plan two steps: ann pays (her second model turn holds its hold until the helper's
    run waits, or for a while), and `helper` consults an inner Agent."""

    async def turn(request: ModelRequest) -> Any:
        said = " ".join(str(m.get("content")) for m in request.messages)
        if "Results so far" in said:
            return respond(done=True, answer=DONE)
        if "Do this step: " in said:
            step = said.split("Do this step: ")[1].split()[0]
            if any(m.get("role") == "tool" for m in request.messages):
                if step == "ann" and parallel:
                    SHARED["holding"].set()  # (this call's hold is made: it is being made)
                    for _ in range(10_000):  # yields until the helper's run waits for it
                        if hold_wait._BELLS:
                            break
                        await asyncio.sleep(0)
                return f"did {step}"
            if step == "ann":
                return {"tool_calls": [{"id": "p", "tool": "pay", "args": {"to": "ann"}}]}
            return {"tool_calls": [{"id": "c", "tool": "consult", "args": {"q": "hi"}}]}
        return respond(steps=["ann", "helper"], parallel=parallel)

    return ScriptedModel(turn)


async def test_an_agent_run_by_a_branchs_tool_waits_for_a_sibling_branchs_call(
    tmp_path: Path,
) -> None:
    """A branch's tool runs an inner Agent on the same budget while the sibling branch's
    model call holds the room a small token cap has left: the inner run waits for that call,
    which ends by itself, and completes as in the serial plan (it was refused at once: every
    hold of the run that started it counted as standing in its way, not only the tool call
    running it and the visits around that)."""
    results = []
    for parallel in (False, True):
        SHARED.update(holding=asyncio.Event(), inner=None)
        if not parallel:
            SHARED["holding"].set()
        config = BudgetConfig(per_user=Caps(total_tokens=1_400), hold_wait_s=30)
        budget = StandardBudget(config, SqliteLedger(tmp_path / f"{parallel}.db"))
        SHARED["budget"] = budget
        agent = Agent(
            "x",
            model=helped(parallel),
            tools=[pay, consult],
            architecture="plan-execute",
            budget=budget,
        )
        async with agent:
            done = await agent.run("go", user_id="alice")
        assert done.status == RunStatus.COMPLETED, (parallel, done.reason)
        results.append(SHARED["inner"])
    assert results == [("completed", ""), ("completed", "")]

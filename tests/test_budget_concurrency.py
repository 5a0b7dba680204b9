"""Budgets under concurrency, and the budget object a user holds (found by probe 32).

- Concurrent runs of one user under one small cap do not refuse each other: a reservation
  refused only because other runs hold the room waits for their holds (at most
  `BudgetConfig.hold_wait_s`, never past the run's deadline), in one process and across
  processes (SQLite file, Postgres schema); a refusal by spending is still immediate.
- `budget.totals(...)` on the object given to an Agent reads the ledger the Agent placed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import pg
from governance_worker import run_gated
from loomgraph import Agent
from loomgraph.governance import (
    NANO_USD,
    BudgetConfig,
    Caps,
    InMemoryLedger,
    Ledger,
    SqliteLedger,
    StandardBudget,
)
from loomgraph.governance.ledger_sites import AmbiguousLedger
from loomgraph.models import ScriptedModel
from loomgraph.protocols import BudgetExceeded, BudgetScope, Reservation, Usage

pg_schema = pg.pg_schema

MODEL = "claude-sonnet-4-5"
TURN = {"text": "done", "usage": {"input_tokens": 20, "output_tokens": 10}}
ONE_CALL_NANO = 210_000  # 20 input tokens at $3/M + 10 output tokens at $15/M
BOUND_S = 60.0  # generous bounds on waits for events: only a run that hangs reaches them

ALICE_A = BudgetScope("run-a", "alice")
ALICE_B = BudgetScope("run-b", "alice")


def tool_call(scope: BudgetScope, calls: int = 1) -> Reservation:
    return Reservation(scope, "tool", Usage(tool_calls=calls))


def small_cap_agent(tmp_path: Path, budget: StandardBudget, journal: str = "journal.db") -> Agent:
    return Agent(
        "Answer.",
        model=ScriptedModel([TURN], name=MODEL),
        budget=budget,
        runtime=f"sqlite:{tmp_path / journal}",
    )


# ---------------------------------------------------------------------------- in one process


async def test_concurrent_runs_are_not_refused_by_each_others_transient_holds(
    tmp_path: Path,
) -> None:
    """Ten runs of one user at once, each spending $0.00021 (one model call), under
    `per_user=Caps(cost_usd=0.05)` with a SQLite journal and ledger: nine used to end
    `budget_exhausted` ("spent $0.000000 + reserved $0.049… + this … > cap"), since each
    call's `max_tokens` is sized to all the cap has left and its hold took it all for a few
    milliseconds. Now each waits for the others' holds: all ten complete."""
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(cost_usd=0.05)))
    agent = small_cap_agent(tmp_path, budget)
    results = await asyncio.gather(*(agent.run(f"q{i}", user_id="alice") for i in range(10)))
    totals = await agent.deps.budget.totals("user:alice")
    holds = await agent.deps.budget.ledger.holds()
    await agent.aclose()
    refused = [r.reason for r in results if r.status != "completed"]
    assert refused == [], f"{len(refused)} of 10 refused, e.g. {refused[:1]}; spent {totals.spent}"
    assert totals.reserved == {} and holds == []
    assert totals.spent["model_calls"] == 10
    assert totals.spent["cost_usd"] == 10 * ONE_CALL_NANO


async def test_a_refusal_by_spending_is_immediate_even_while_another_run_holds() -> None:
    """spent 2 + this 2 > cap 3 whatever run B holds: refused at once, not after a wait
    (on an in-memory ledger the refusal completes without the task ever suspending)."""
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=3)))  # hold_wait_s=30
    await budget.settle(await budget.reserve(tool_call(ALICE_A, 2)), Usage(tool_calls=2))
    held = await budget.reserve(tool_call(ALICE_B))  # open, never settled here
    refusal = asyncio.ensure_future(budget.reserve(tool_call(BudgetScope("run-c", "alice"), 2)))
    await asyncio.sleep(0)  # one turn of the loop: the refusal is decided by then
    assert refusal.done()
    with pytest.raises(BudgetExceeded, match="user:alice:tool_calls") as info:
        refusal.result()
    assert "waited" not in info.value.detail
    assert [h.id for h in await budget.ledger.holds()] == [held.id]


LEDGERS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=LEDGERS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """Each kind of ledger (made outside the event loop: the Postgres check runs its own)."""
    if request.param == "memory":
        return InMemoryLedger()
    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "ledger.db")
    from loomgraph.governance import PostgresLedger

    return PostgresLedger(pg.postgres_dsn(), schema=request.getfixturevalue("pg_schema"))


async def test_a_wait_for_a_hold_that_is_never_settled_ends_at_hold_wait_s(ledger: Ledger) -> None:
    """Another run holds the only tool call (taken through the budget, never settled):
    a second run's reservation would fit without it, so it waits — and is refused once
    `hold_wait_s` has passed, naming the hold it waited for. Nothing is held for it."""
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=1), hold_wait_s=0.2), ledger)
    try:
        held = await budget.reserve(tool_call(ALICE_A))
        with pytest.raises(BudgetExceeded, match="user:alice:tool_calls") as info:
            await asyncio.wait_for(budget.reserve(tool_call(ALICE_B)), BOUND_S)
        assert "held by 1 other reservation; waited 0.2 s" in info.value.detail
        assert [h.id for h in await ledger.holds()] == [held.id]
        assert (await budget.totals("user:alice")).reserved == {"tool_calls": 1}
    finally:
        await ledger.close()


async def test_a_waiting_reservation_goes_on_when_the_hold_is_settled() -> None:
    """The waiter is woken by the settlement (no fixed sleep) and reserves what is left."""
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=2)))  # hold_wait_s=30
    first = await budget.reserve(tool_call(ALICE_A))
    second = await budget.reserve(tool_call(ALICE_B))
    waiting = asyncio.ensure_future(budget.reserve(tool_call(BudgetScope("run-c", "alice"))))
    await asyncio.sleep(0)
    assert not waiting.done()  # parked on the ledger's bell
    await budget.release(first)
    third = await asyncio.wait_for(waiting, BOUND_S)
    assert {h.id for h in await budget.ledger.holds()} == {second.id, third.id}


async def test_a_run_never_waits_for_its_own_holds() -> None:
    """A run's own hold (a node visit holds its place while its child graph reserves)
    refuses at once: waiting for it could only end at the bound."""
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=1)))
    await budget.reserve(tool_call(ALICE_A))
    refusal = asyncio.ensure_future(budget.reserve(tool_call(ALICE_A)))
    await asyncio.sleep(0)
    assert refusal.done() and isinstance(refusal.exception(), BudgetExceeded)


async def test_a_wait_never_goes_past_the_runs_deadline() -> None:
    """Waiting for another run's hold ends at the run's wall-clock deadline, refused by
    that cap, however long `hold_wait_s` is."""
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=1, wall_clock_s=0.3)))
    await budget.begin_run(ALICE_B)
    await budget.reserve(tool_call(ALICE_A))
    with pytest.raises(BudgetExceeded) as info:
        await asyncio.wait_for(budget.reserve(tool_call(ALICE_B)), BOUND_S)
    assert info.value.cap == "user:alice:wall_clock_s"


async def test_fit_output_holds_what_it_sizes_and_the_calls_reservation_takes_it_over() -> None:
    """Sizing and holding are one ledger transaction (no other run can take the room in
    between); the call's reservation of that worst case takes the hold over: no second
    transaction, no reads."""
    ledger = CountingLedger()
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(cost_usd=0.05)), ledger)
    room = await budget.fit_output(ALICE_A, 20, None)
    assert ledger.calls == ["transact"]
    [hold] = await ledger.inner.holds()
    amount = Usage(input_tokens=20, output_tokens=room, model_calls=1)
    held = await budget.reserve(Reservation(ALICE_A, "model", amount))
    assert ledger.calls == ["transact"] and held.id == hold.id
    assert held.amount.cost_usd == hold.amounts["cost_usd"] / NANO_USD
    await budget.settle(held, Usage(input_tokens=20, output_tokens=10))
    assert await ledger.inner.holds() == []


def test_hold_wait_s_must_be_a_non_negative_number() -> None:
    for bad in (-1, float("nan"), float("inf"), True, "30"):
        with pytest.raises(ValueError, match="hold_wait_s"):
            BudgetConfig(hold_wait_s=bad)  # type: ignore[arg-type]
    assert BudgetConfig(hold_wait_s=0).hold_wait_s == 0


# ---------------------------------------------------------------------------- across processes


def run_processes(*args: str, processes: int, runs: int) -> list[dict[str, Any]]:
    """`processes` workers, each starting `runs` one-call runs of alice at once after one
    gate, under her cap of $0.05 (tests/governance_worker.py)."""
    flags = [*args, "--runs", str(runs), "--calls", "1", "--cap", "1000", "--cost-cap", "0.05"]
    return run_gated(flags, processes, timeout=180)


async def check_all_completed(results: list[dict[str, Any]], ledger: Ledger, count: int) -> None:
    try:
        totals = await ledger.totals("user:alice")
        holds = await ledger.holds()
    finally:
        await ledger.close()
    refused = [r["reason"] for r in results if r["status"] != "completed"]
    assert len(results) == count
    assert refused == [], f"{len(refused)} of {count} refused, e.g. {refused[:1]}"
    assert holds == [] and totals.reserved == {}
    assert totals.spent["model_calls"] == count
    assert totals.spent["cost_usd"] == count * ONE_CALL_NANO <= 0.05 * NANO_USD


async def test_runs_in_three_processes_sharing_one_sqlite_file_do_not_refuse_each_other(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    results = await asyncio.to_thread(
        run_processes, "--journal", f"sqlite:{db}", processes=3, runs=8
    )
    await check_all_completed(results, SqliteLedger(db), 24)


@pytest.mark.postgres
async def test_runs_in_three_processes_sharing_one_postgres_schema_do_not_refuse_each_other(
    pg_schema: str,
) -> None:
    """3 processes x 8 runs used to end with 23 of 24 refused."""
    from loomgraph.governance import PostgresLedger

    dsn = pg.postgres_dsn()
    results = await asyncio.to_thread(
        run_processes, "--journal", dsn, "--schema", pg_schema, processes=3, runs=8
    )
    await check_all_completed(results, PostgresLedger(dsn, schema=pg_schema), 24)


# ---------------------------------------------------------------------------- the user's object


async def test_the_budget_object_given_to_the_agent_reports_what_its_runs_spent(
    tmp_path: Path,
) -> None:
    """`budget = StandardBudget(...)`, `Agent(..., budget=budget, runtime="sqlite:…")`, a
    run, then `await budget.totals("user:alice")` — the call docs/governance.md shows —
    used to return nothing spent: the Agent's bound copy keeps its ledger in the journal's
    file, and the user's object read its own empty in-memory one."""
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(cost_usd=1.0)))
    agent = small_cap_agent(tmp_path, budget)
    result = await agent.run("q", user_id="alice")
    charged = await agent.deps.budget.totals("user:alice")
    seen = await budget.totals("user:alice")
    crashed = await budget.crashed_usage(result.run_id)
    await agent.aclose()
    assert result.ok and charged.spent.get("model_calls") == 1
    assert seen.spent == charged.spent
    assert crashed == Usage()


async def test_agents_on_one_journal_file_are_read_together(tmp_path: Path) -> None:
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(cost_usd=1.0)))
    first, second = small_cap_agent(tmp_path, budget), small_cap_agent(tmp_path, budget)
    await first.run("q", user_id="alice")
    await second.run("q", user_id="alice")
    seen = await budget.totals("user:alice")
    await first.aclose()
    await second.aclose()
    assert seen.spent["model_calls"] == 2


async def test_a_budget_bound_to_agents_with_different_ledgers_says_which_to_read(
    tmp_path: Path,
) -> None:
    """Bound to two Agents whose journals are two files (or one file and memory), the
    budget's spending is in two ledgers: its `totals` refuses to pick one, naming the way
    to read each."""
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(cost_usd=1.0)))
    one = small_cap_agent(tmp_path, budget, "one.db")
    two = small_cap_agent(tmp_path, budget, "two.db")
    three = Agent("Answer.", model=ScriptedModel([TURN], name=MODEL), budget=budget)
    try:
        await one.run("q", user_id="alice")
        await two.run("q", user_id="alice")
        await three.run("q", user_id="alice")
        with pytest.raises(AmbiguousLedger, match=r"agent\.deps\.budget\.totals") as info:
            await budget.totals("user:alice")
        assert len(info.value.ledgers) == 3
        for agent in (one, two, three):
            assert (await agent.deps.budget.totals("user:alice")).spent["model_calls"] == 1
    finally:
        for agent in (one, two, three):
            await agent.aclose()


async def test_a_budget_on_a_ledger_of_its_own_reads_it_when_bound(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(cost_usd=1.0)), ledger)
    agent = small_cap_agent(tmp_path, budget)
    await agent.run("q", user_id="alice")
    seen = await budget.totals("user:alice")
    await agent.aclose()
    await ledger.close()
    assert agent.deps.budget.ledger is ledger  # type: ignore[attr-defined]
    assert seen.spent["model_calls"] == 1


# ---------------------------------------------------------------------------- helpers


class CountingLedger(Ledger):
    """An in-memory ledger that records which of its operations were called."""

    local = True

    def __init__(self) -> None:
        self.inner = InMemoryLedger()
        self.calls: list[str] = []

    async def transact(
        self, scopes: Any, hold_id: Any, decide: Any, *, durable: bool = True
    ) -> Any:
        self.calls.append("transact")
        return await self.inner.transact(scopes, hold_id, decide, durable=durable)

    async def totals(self, scope: str) -> Any:
        self.calls.append("totals")
        return await self.inner.totals(scope)

    async def holds(self, run_id: str | None = None) -> Any:
        self.calls.append("holds")
        return await self.inner.holds(run_id)

    async def charges(self, run_id: str) -> Any:
        return await self.inner.charges(run_id)

    async def run_clock(self, run_id: str, started_at: float, deadline: float | None) -> Any:
        return await self.inner.run_clock(run_id, started_at, deadline)

    async def forget_run(self, run_id: str) -> None:
        await self.inner.forget_run(run_id)

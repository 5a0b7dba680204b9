"""A dead letter whose close a crash cut off from its end is closed by whatever finds it
next (each test failed before its fix).

A resume that gives a run up journals it `dead_letter` (`begin_recovery`), then closes it
(`close_dead_letter`): the run's budget clock ended, what its last attempt still held
charged (a node visit's hold given back), and one run span, an error. A SIGKILL between
the two left the clock open for good
(the crashed attempt's hold reserved in the ledger, the run's clock kept there) and no run
span: nothing but a retry looks at a dead letter again. Now a resume refused with
`RunDeadLettered`, and a fleet worker that picks the run's job again, end its clock; ending
it again changes nothing in the ledger. No run span is traced then: a dead letter's span is
its end's, not one per look at it.

Worker: tests/run_end_crash_worker.py (SIGKILL right after `finish_run` took an end), run
through this file, which gives its Agent a budget: `python tests/test_dead_letter_close.py`
with the worker's arguments.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

import pg
import run_end_crash_worker as W
import test_run_end_repairs as R
from loomgraph import Agent
from loomgraph.agent.fleet import fleet_queue
from loomgraph.agent.recovery import RunDeadLettered
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.governance.crash_charges import visit_hold
from loomgraph.workers.advance import Advanced, advance
from test_crash_matrix import Journal
from test_telemetry_status import Traced

pg_schema = pg.pg_schema


def budgeted(**options: Any) -> Any:
    """The worker's Agent class, given a budget whose caps no run reaches (its ledger in the
    journal's database): every hold and the run's clock (a wall-clock cap) are kept there."""
    budget = StandardBudget(BudgetConfig(tool_calls=1000, wall_clock_s=3600.0))
    return functools.partial(Agent, budget=budget, **options)


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Traced:
    """The worker runs through this file (its Agent budgeted), and so does this process's
    Agent, traced."""
    monkeypatch.setattr(R, "WORKER", __file__)
    found = Traced()
    monkeypatch.setattr(W, "Agent", budgeted(telemetry=found.telemetry))
    return found


async def held(agent: Agent, run_id: str) -> tuple[int, int, bool]:
    """The run's open holds and crash charges in the agent's ledger, and whether the ledger
    keeps its clock (asked last: a clock it does not keep is recorded by the asking)."""
    ledger = agent.deps.budget.ledger  # type: ignore[attr-defined]
    holds, charges = await ledger.holds(run_id), await ledger.charges(run_id)
    start, _ = await ledger.run_clock(run_id, -1.0, None)
    return len(holds), len(charges), start != -1.0


def check_not_traced_again(traced: Traced) -> None:
    """Finding a dead letter ends its clock but traces no second run span: its run span is
    its end's (lost with a crash right after it), never counted once per look."""
    assert [s for s in traced.spans() if s.name == "loom.run"] == []


async def test_a_dead_letter_killed_before_its_close_is_closed_by_a_refused_resume(
    tmp_path: Path, traced: Traced
) -> None:
    """A run dies inside its tool call (its hold left in the ledger, its clock open); a
    resume gives it up (`max_recoveries` 0) and dies right after `finish_run` journaled
    `dead_letter`, before `close_dead_letter`. A resume, refused, closes it: the hold is
    charged, the clock forgotten. Refused again, the ledger stays as it is."""
    journal = Journal(f"sqlite:{tmp_path / 'journal.db'}")
    (tmp_path / "poison").touch()
    first = R.run_worker(tmp_path, journal, "run")
    R.killed(first, "poison")
    (tmp_path / "poison").unlink()
    run_id = first.lines[0]["run_id"]
    gave_up = R.run_worker(
        tmp_path, journal, "resume", "--run-id", run_id, "--max-recoveries", "0",
        "--die-after", "dead_letter",
    )  # fmt: skip
    R.killed(gave_up, "after_dead_letter")

    agent = W.make_agent(tmp_path, journal.open())
    try:
        ledger = agent.deps.budget.ledger  # type: ignore[attr-defined]
        # The crashed attempt's, left open: its tool call's, charged when the run is closed,
        # and its node visit's, given back (the visit never ended).
        left = sum(not visit_hold(hold) for hold in await ledger.holds(run_id))
        assert left > 0
        with pytest.raises(RunDeadLettered):
            await agent.resume(run_id)
        check_not_traced_again(traced)
        totals = await agent.deps.budget.totals("global")  # type: ignore[attr-defined]
        with pytest.raises(RunDeadLettered):
            await agent.resume(run_id)  # closing it again is harmless
        assert await agent.deps.budget.totals("global") == totals  # type: ignore[attr-defined]
        assert totals.reserved.get("tool_calls", 0) == 0, totals
        assert await held(agent, run_id) == (0, left, False)  # charged once; clock ended
    finally:
        await agent.aclose()
        await agent.deps.runtime.close()  # type: ignore[attr-defined]


@pytest.mark.postgres
async def test_a_fleet_job_picked_again_after_a_crash_at_a_dead_letter_closes_it(
    tmp_path: Path, pg_schema: str, traced: Traced
) -> None:
    """A fleet worker gives a crashed run up and dies right after `finish_run` journaled
    `dead_letter`; the job is picked again: the next worker, which leaves the run as it is,
    ends its clock (`advance` repaired only its kept entries, leaving the clock open)."""
    journal = Journal(pg.postgres_dsn(), pg_schema)
    agent = W.make_agent(tmp_path, journal.open())
    try:
        run_id = await R._crashed_in_a_step(tmp_path, journal, agent)
        first = R.run_worker(
            tmp_path, journal, "advance", "--run-id", run_id, "--die-after", "dead_letter",
            "--max-recoveries", "0",
        )  # fmt: skip
        R.killed(first, "after_dead_letter")
        ledger = agent.deps.budget.ledger  # type: ignore[attr-defined]
        left = sum(not visit_hold(hold) for hold in await ledger.holds(run_id))  # (as above)
        assert left > 0 and (await held(agent, run_id))[1] == 0
        again = await advance(agent, fleet_queue(agent.deps.runtime), W.start_job(run_id))
        assert again == Advanced.NOTHING
        check_not_traced_again(traced)
        assert await held(agent, run_id) == (0, left, False)
    finally:
        await agent.aclose()
        await agent.deps.runtime.close()  # type: ignore[attr-defined]


if __name__ == "__main__":  # the worker, its Agent budgeted
    W.Agent = budgeted()  # type: ignore[misc]
    asyncio.run(W.main(W.parse()))

"""A run whose process dies, or whose journal or ledger goes out of reach, and which is resumed
is charged the node visits of the same run never interrupted: a resumed run ends as an
uninterrupted one, under a `node_visits` cap too.

Found by probing crash charging in composite graphs: a dead process's node-visit holds were
charged in full when the run was opened again (as an effect in flight is), and the resume
then did those visits again and charged them again — so a three-branch parallel plan capped
at exactly its 13 visits ended `budget_exhausted` at 19 of 25 crash points. A visit's hold is
settled just before its transition is journaled, so a hold a dead process left is always of
a visit its resume does again: it is given back, not charged. A visit cut off by an outage
or by its run's lease leaves its hold so too (the second probe: they were settled on the way
out, then charged again by the resume). The model and tool calls in flight are charged as
before (they may have run; the resume makes them again).

The crash is simulated in-process (`dying_process`): the process dies before or after its Nth
journal write or ledger transaction, then refuses every call, or the call meets an outage;
a fresh process resumes. Then the visit's other ways out, found by the second probe.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dying_process import DyingLedger, DyingRuntime, Proc
from loomgraph import Agent, tool
from loomgraph.agent.result import RunResult
from loomgraph.agent.submitting import cancel_idle
from loomgraph.governance import BudgetConfig, Caps, Hooks, SqliteLedger, StandardBudget
from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec
from loomgraph.models import ScriptedModel
from loomgraph.protocols import (
    BudgetExceeded,
    BudgetScope,
    Event,
    Reservation,
    RunStatus,
    Transition,
    Usage,
)
from loomgraph.protocols.events import NODE_STARTED
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.sqlite import SqliteRuntime
from payment_plans import Plan, pay, plan_model

Cut = tuple[int, bool, bool]
"""Where a process is cut off: at its Nth journal write or ledger transaction, after it
(True) or before, and whether by an outage (the call raises `ServiceUnavailable` before it is
made, the process lives on and the run is left to be resumed) rather than by its death."""


async def in_process(
    tmp: Path, plan: Plan, cap: int, cut: Cut | None, run_id: str | None
) -> RunResult | Proc:
    """One process over the journal and ledger files: it runs (or resumes `run_id`) to the
    end, or is cut off at `cut` (then: the process, dead or met by the outage)."""
    at = None if cut is None else cut[:2]
    # (lingering, what each task would have done next is missed)
    proc = Proc(at, lingers=True, outage=cut is not None and cut[2])
    journal = SqliteRuntime(tmp / "journal.db", verify=False, busy_timeout=5.0)
    ledger = SqliteLedger(tmp / "ledger.db", busy_timeout=5.0)
    budget = StandardBudget(BudgetConfig(per_user=Caps(node_visits=cap)), DyingLedger(ledger, proc))
    agent = Agent(
        "x",
        model=plan_model(plan),
        tools=[pay],
        architecture=plan[0],
        budget=budget,
        runtime=DyingRuntime(journal, proc),  # type: ignore[arg-type]
    )
    try:
        if run_id is None:
            return await agent.run("pay them", user_id="alice")
        return await agent.resume(run_id)
    except BaseException:
        if not proc.cut:
            raise
        runs = [run_id] if run_id else [run.run_id for run in await journal.runs()]
        for run in runs:  # (none: it was cut off before the run began)
            if lease := await journal.lease(run):
                await journal.release_lease(run, lease.owner)  # as an operator would
        return proc
    finally:
        await journal.close()
        await ledger.close()


async def visits_spent(tmp: Path) -> int:
    ledger = SqliteLedger(tmp / "ledger.db")
    try:
        return (await ledger.totals("user:alice")).spent.get("node_visits", 0)
    finally:
        await ledger.close()


async def run_through(tmp: Path, plan: Plan, cap: int, cuts: list[Cut]) -> tuple[RunResult, int]:
    """Run, the process cut off at each of `cuts` in turn and a fresh one resuming; the end,
    and how many visits were cut off between their settle and their transition (the one
    window where a visit is charged twice: settled, and done again by the resume)."""
    run_id: str | None = None
    gaps = 0
    for cut in [*cuts, None]:
        ended = await in_process(tmp, plan, cap, cut, run_id)
        if isinstance(ended, RunResult):
            return ended, gaps
        gaps += ended.missed.count("append_transition")
        if run_id is None:
            journal = SqliteRuntime(tmp / "journal.db")
            runs = await journal.runs()
            await journal.close()
            run_id = runs[0].run_id if runs else None  # None: cut off before the run began
    raise AssertionError("the last process is not cut off")


async def check_twins(tmp: Path, plan: Plan, cuts: list[Cut]) -> int:
    """Run the uninterrupted twin, then the cut-off run under a cap of exactly the twin's
    visits: it ends as the twin did, charged the twin's visits — but for one more per visit
    cut off between its settle and its transition, which may leave the cap short. The number
    of those."""
    (tmp / "twin").mkdir()
    (tmp / "cut").mkdir()
    twin, _ = await run_through(tmp / "twin", plan, 10_000, [])
    assert twin.status == RunStatus.COMPLETED, twin.reason
    wanted = await visits_spent(tmp / "twin")
    resumed, gaps = await run_through(tmp / "cut", plan, wanted, cuts)
    got = await visits_spent(tmp / "cut")
    assert wanted <= got <= wanted + gaps, (got, wanted, gaps)
    if gaps == 0:
        assert resumed.status == RunStatus.COMPLETED, resumed.reason
    elif resumed.status == RunStatus.BUDGET_EXHAUSTED:
        assert "node_visits" in str(resumed.reason), resumed.reason
        return gaps
    assert (resumed.output, resumed.node_visits) == (twin.output, twin.node_visits)
    return gaps


@pytest.mark.parametrize("outage", [False, True], ids=["crash", "outage"])
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("n", [3, 6, 9, 12])
async def test_a_parallel_plan_cut_off_mid_run_meets_a_cap_of_its_twins_visits(
    tmp_path: Path, n: int, after: bool, outage: bool
) -> None:
    await check_twins(tmp_path, ("plan-execute", 3, True, False), [(n, after, outage)])


@settings(max_examples=60, deadline=None)
@given(
    plan=st.one_of(
        st.tuples(st.just("react"), st.integers(1, 3), st.just(False), st.just(False)),
        st.tuples(st.just("plan-execute"), st.integers(1, 3), st.booleans(), st.booleans()),
    ),
    cuts=st.lists(
        st.tuples(st.integers(1, 40), st.booleans(), st.booleans()), min_size=1, max_size=3
    ),
)
def test_crashes_and_outages_never_change_the_visits_a_run_is_charged(
    tmp_path_factory: pytest.TempPathFactory, plan: Plan, cuts: list[Cut]
) -> None:
    """Any plan (its map run once or twice), its process killed, or its journal or ledger out
    of reach, at any journal write or ledger transaction, up to three times: the resumed run
    ends as its uninterrupted twin, under a cap of the twin's visits, charged exactly those
    (`check_twins` says the one window)."""
    tmp = tmp_path_factory.mktemp("cut")
    asyncio.run(check_twins(tmp, plan, cuts))


# ---------------------------------------------------------------- the visit's own way out

CHILD = """
schema_version: 1
name: work-child
version: "1"
entry: work
nodes:
  work: {kind: function, call: 'test_crashed_visits:work', reads: [input], writes: []}
edges:
  - {from: work, to: END}
"""

PARENT = """
schema_version: 1
name: timed-map
version: "1"
entry: prep
state:
  items: {type: 'list[str]'}
  results: {type: 'list[str]', reducer: append, default: []}
nodes:
  prep: {kind: function, call: 'test_crashed_visits:prep', reads: [input], writes: [items]}
  each: {kind: map, graph: child.yaml, over: items, output: results, concurrency: 3,
         timeout: 1, on_error: after}
  after: {kind: function, call: 'test_crashed_visits:work', reads: [input], writes: []}
edges:
  - {from: prep, to: each}
  - {from: each, to: after}
  - {from: after, to: END}
"""


def prep(state: dict[str, Any]) -> dict[str, Any]:
    return {"items": ["a", "b", "c"]}


def work(state: dict[str, Any]) -> dict[str, Any]:
    return {}


class StuckJournal(SqliteRuntime):
    """A journal whose first write of a map branch's transition never returns (a stalled
    disk): the other branches, done, wait behind it for their turn to journal."""

    stuck = False

    async def append_transition(self, transition: Transition) -> None:
        if "/" in transition.node and not self.stuck:
            self.stuck = True
            await asyncio.Event().wait()  # until the map's time limit cancels it
        await super().append_transition(transition)


async def test_map_branches_cut_off_by_its_time_limit_are_charged_the_visits_they_made(
    tmp_path: Path,
) -> None:
    """Found by probing: a branch done with its node, waiting for its turn to journal its
    transition when its map's `timeout` cut it off, was never charged (its hold, settled only
    under the lock, stayed reserved until the run's end dropped it): every timed-out map
    could make visits a `node_visits` cap never saw. Every visit made is charged."""
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "graph.yaml").write_text(PARENT)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    started: list[str] = []
    hooks = Hooks()

    @hooks.on_event
    def heard(event: Event) -> None:
        if event.kind == NODE_STARTED:
            started.append(event.payload["node"])

    async with Agent(
        "x",
        model=ScriptedModel([]),
        architecture=str(tmp_path / "graph.yaml"),
        budget=StandardBudget(BudgetConfig(node_visits=1000), ledger),
        hooks=hooks,
        runtime=StuckJournal(tmp_path / "journal.db"),
    ) as agent:
        result = await agent.run("go", user_id="alice")
        assert result.status == RunStatus.COMPLETED, result.reason
        assert await ledger.holds() == []
        totals = await ledger.totals("global")
    assert sorted(started) == sorted(
        ["prep", "each", "each/0/work", "each/1/work", "each/2/work", "after"]
    ), started
    assert totals.spent["node_visits"] == len(started)


class RefusingBudget(StandardBudget):
    """A budget of a user's own whose settle of the second node visit raises `error`."""

    def __init__(self, ledger: SqliteLedger, error: Exception) -> None:
        super().__init__(BudgetConfig(node_visits=1000), ledger)
        self.error = error
        self.visits = 0

    async def settle(self, reservation: Reservation, actual: Usage) -> dict[str, int]:
        if reservation.kind == "node":
            self.visits += 1
            if self.visits == 2:
                raise self.error
        return await super().settle(reservation, actual)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BudgetExceeded("global:node_visits", "refused at settle"), RunStatus.BUDGET_EXHAUSTED),
        (RuntimeError("the budget broke"), RunStatus.FAILED),
    ],
    ids=["budget-exceeded", "runtime-error"],
)
async def test_a_visit_whose_settle_fails_ends_the_run_as_its_node_failing_would(
    tmp_path: Path, error: Exception, status: RunStatus
) -> None:
    """Found by probing: with the settle moved after the visit's patch, its exception
    escaped the step, the run left `running` with its patch applied. It is the visit's
    failure, as before: journaled, the state as it was before the visit."""
    async with Agent(
        "x",
        model=plan_model(("react", 1, False, False)),
        tools=[pay],
        budget=RefusingBudget(SqliteLedger(tmp_path / "ledger.db"), error),
        runtime=f"sqlite:{tmp_path / 'journal.db'}",
    ) as agent:
        ended = await agent.run("pay them", user_id="alice")
        assert ended.status == status, ended.reason
        record = await agent.deps.runtime.load_run(ended.run_id)
        assert record is not None and record.status == status
        transitions = await agent.deps.runtime.transitions(ended.run_id)
        assert [t.node for t in transitions] == ["model"]  # the second visit left no trace


class StalledLeases(SqliteRuntime):
    """A journal that stops answering lease renewals once `stalled` (a lock, a slow disk)."""

    stalled = False

    async def renew_lease(self, run_id: str, owner: str) -> Any:
        if self.stalled:
            raise JournalUnavailable("renew_lease", "not answered")
        return await super().renew_lease(run_id, owner)


async def test_a_visit_its_lease_stopped_is_charged_once_when_the_resume_does_it(
    tmp_path: Path,
) -> None:
    """Found by probing: the lease could not be renewed while a tool ran, its holder
    cancelled the run (left `running`), and the visit cut off was charged on the way out,
    then again by the resume. The hold is left, as a crash leaves it, and given back."""
    (tmp_path / "twin").mkdir()
    twin, _ = await run_through(tmp_path / "twin", ("react", 2, False, False), 10_000, [])
    wanted = await visits_spent(tmp_path / "twin")
    journal = StalledLeases(tmp_path / "journal.db", lease_seconds=1.0)
    ledger = SqliteLedger(tmp_path / "ledger.db")

    @tool
    async def pay(to: str) -> str:
        """Pay someone; the second payment hangs once the lease stalls."""
        if to == "bob":
            journal.stalled = True
            await asyncio.Event().wait()  # until the lease's holder cancels the run
        return f"paid {to}"

    agent = Agent(
        "x",
        model=plan_model(("react", 2, False, False)),
        tools=[pay],
        budget=StandardBudget(BudgetConfig(per_user=Caps(node_visits=wanted)), ledger),
        runtime=journal,
    )
    async with agent:
        with pytest.raises(JournalUnavailable):
            await agent.run("pay them", user_id="alice")
    (run,) = await journal.runs()
    assert run.status == RunStatus.RUNNING
    journal.stalled = False
    if lease := await journal.lease(run.run_id):
        await journal.release_lease(run.run_id, lease.owner)  # as an operator would
    await journal.close()
    await ledger.close()
    resumed = await in_process(tmp_path, ("react", 2, False, False), wanted, None, run.run_id)
    assert isinstance(resumed, RunResult) and resumed.status == RunStatus.COMPLETED, resumed
    assert resumed.node_visits == twin.node_visits
    assert await visits_spent(tmp_path) == wanted


GATE: dict[str, asyncio.Event] = {}


async def held(state: Any) -> dict[str, Any]:
    """A visit that waits, holding its hold, until the test lets it go."""
    GATE["in"].set()
    await asyncio.wait_for(GATE["go"].wait(), 30)
    return {}


THREE = Graph(
    name="three",
    entry="a",
    nodes={
        "a": NodeSpec(kind="function", call=f"{__name__}:work"),
        "b": NodeSpec(kind="function", call=f"{__name__}:held"),
        "c": NodeSpec(kind="function", call=f"{__name__}:work"),
    },
    edges=[
        EdgeSpec(source="a", target="b"),
        EdgeSpec(source="b", target="c"),
        EdgeSpec(source="c", target="END"),
    ],
)


@pytest.mark.parametrize("stale", ["begin_run", "end_run"])
async def test_a_stale_process_closing_a_live_visits_hold_loses_no_charge(
    tmp_path: Path, stale: str
) -> None:
    """Found by probing: a process stopped just before its own `begin_run` (or a zombie's
    `end_run`) closes the holds of the run's live owner; the owner's visit, its hold given
    back, then settled to nothing: 3 visits ran, 2 were charged. A settle without its hold
    charges the visit (an over-count at worst, as for any hold a stale process charges)."""
    GATE.update({"in": asyncio.Event(), "go": asyncio.Event()})
    ledger = SqliteLedger(tmp_path / "ledger.db")
    config = BudgetConfig(per_user=Caps(node_visits=100))
    async with Agent(
        "x",
        model=ScriptedModel([]),
        architecture=THREE,
        budget=StandardBudget(config, ledger),
        runtime=f"sqlite:{tmp_path / 'journal.db'}",
    ) as agent:
        running = asyncio.create_task(agent.run("go", user_id="alice"))
        await asyncio.wait_for(GATE["in"].wait(), 30)
        (run,) = await agent.deps.runtime.runs()
        others = SqliteLedger(tmp_path / "ledger.db")
        try:
            other = StandardBudget(config, others)
            await getattr(other, stale)(BudgetScope(run.run_id, "alice"))
        finally:
            await others.close()
        GATE["go"].set()
        result = await running
        assert result.status == RunStatus.COMPLETED, result.reason
    assert await visits_spent(tmp_path) == 3


async def test_a_crashed_run_cancelled_then_leaves_nothing_held(tmp_path: Path) -> None:
    """Found by probing: a run whose process died mid-visit, then cancelled (nobody resumed
    it), kept its dead process's holds for good: the user's later runs waited for them and
    were refused. A run ended aside (cancelled, given up) closes them as its resume would."""
    cut = await in_process(tmp_path, ("react", 2, False, False), 100, (5, False, False), None)
    assert isinstance(cut, Proc) and cut.dead
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        assert await ledger.holds(), "the crash left no hold to close"
        async with Agent(
            "x",
            model=plan_model(("react", 2, False, False)),
            tools=[pay],
            budget=StandardBudget(BudgetConfig(per_user=Caps(node_visits=100)), ledger),
            runtime=f"sqlite:{tmp_path / 'journal.db'}",
        ) as agent:
            (run,) = await agent.deps.runtime.runs()
            # What `loomgraph serve`'s cancel does for a run nobody advances.
            await cancel_idle(agent.deps, run.run_id, "cancelled by ops")
            record = await agent.deps.runtime.load_run(run.run_id)
            assert record is not None and record.status == RunStatus.CANCELLED
        assert await ledger.holds() == []
        assert (await ledger.totals("user:alice")).reserved == {}
    finally:
        await ledger.close()

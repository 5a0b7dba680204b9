"""The in-memory journal (the default) leases and fences runs as the SQL journals do, so two
resumes of one run in one process never both drive it.

Found by a trust probe (/tmp/probe_trust p4): while `agent.resume(run, approve=True)` was
inside the approved tool, a concurrent `agent.resume(run)` saw the run `running`, took it for
a crashed one, counted a recovery and ran the tool in flight again (two executions of one
key); SQLite refused the second resume with `RunConflict`. The in-memory journal had no
leases, so `hold_lease` did nothing.

The durable journals' lease and fencing tests (`test_runtime_backends`, `test_fencing`) are
run against it unchanged, then the probe's case through real Agents.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import test_fencing as fencing
import test_runtime_backends as backends
from loomgraph import Agent, tool
from loomgraph.agent.leases import hold_lease
from loomgraph.governance import LedgerUnavailable, StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, RunLeases, RunRecord, RunStatus
from loomgraph.runtime.errors import JournalUnavailable, RunConflict
from loomgraph.runtime.memory import InMemoryRuntime

WAIT = 10  # seconds any awaited event may take at most


async def test_the_sql_journals_lease_tests_hold_in_memory() -> None:
    await backends.test_leases(InMemoryRuntime)
    await fencing.test_tokens_grow_with_every_new_owner(InMemoryRuntime)


async def test_the_sql_journals_fencing_tests_hold_in_memory() -> None:
    await fencing.test_a_fenced_out_writer_writes_nothing(InMemoryRuntime)
    await fencing.test_the_ambient_fence_only_applies_to_its_own_run(InMemoryRuntime)


async def test_an_agent_on_the_default_journal_holds_leases() -> None:
    agent = Agent("x", model=ScriptedModel(["hi"]))
    assert isinstance(agent.deps.runtime, RunLeases)
    assert agent.deps.leases is agent.deps.runtime
    done = await agent.run("go")
    # Given back when the run ended, its token kept for the next holder.
    runtime: Any = agent.deps.runtime
    assert await runtime.lease(done.run_id) is None
    assert (await runtime.acquire_lease(done.run_id, "next")).token == 2


async def test_a_leased_run_is_not_forgotten_to_make_room() -> None:
    runtime = InMemoryRuntime(max_runs=2)
    await runtime.start_run(RunRecord("a", "g", "h", None, None))
    await runtime.finish_run("a", RunStatus.AWAITING_APPROVAL, "asks", None)
    await runtime.acquire_lease("a", "resumer")  # a resume under way, not `running` yet
    for run_id in ("b", "c"):
        await runtime.start_run(RunRecord(run_id, "g", "h", None, None))
        await runtime.finish_run(run_id, RunStatus.COMPLETED, "", None)
    assert [r.run_id for r in await runtime.runs()] == ["a", "c"]
    await runtime.release_lease("a", "resumer")
    await runtime.start_run(RunRecord("d", "g", "h", None, None))
    assert [r.run_id for r in await runtime.runs()] == ["c", "d"]


# ------------------------------------------------------------------ through Agents

PAID: list[str] = []
# Set in each test (asyncio events belong to the test's loop).
GATE: dict[str, asyncio.Event] = {}


@tool
async def pay(to: str, amount: int, idempotency_key: str = "") -> str:
    """Pay someone; waits in the payment until the test lets it go."""
    PAID.append(idempotency_key)
    GATE["inside"].set()
    await asyncio.wait_for(GATE["release"].wait(), WAIT)
    return f"paid {amount} to {to}"


def pay_once(request: ModelRequest) -> Any:
    if request.messages[-1]["role"] == "tool":
        return "done"
    return {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "bob", "amount": 5}}]}


async def test_a_second_resume_of_a_run_under_way_is_refused() -> None:
    PAID.clear()
    GATE.update(inside=asyncio.Event(), release=asyncio.Event())
    agent = Agent(
        "x",
        model=ScriptedModel(pay_once),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"]),
    )
    stopped = await agent.run("go", user_id="u")
    assert stopped.status == "awaiting_approval"
    approving = asyncio.create_task(agent.resume(stopped.run_id, approve=True))
    try:
        await asyncio.wait_for(GATE["inside"].wait(), WAIT)  # the approved call is in the tool
        with pytest.raises(RunConflict):  # not taken for a crashed run and run again
            await agent.resume(stopped.run_id)
    finally:
        GATE["release"].set()
    done = await asyncio.wait_for(approving, WAIT)
    assert done.status == "completed" and len(PAID) == 1
    record = await agent.deps.runtime.load_run(stopped.run_id)
    assert record is not None and record.recoveries == 0  # nothing took it for a crash
    (paid,) = [e for e in await agent.deps.runtime.effects(stopped.run_id) if e.kind == "tool"]
    assert (paid.attempts, paid.recovered) == (1, False)


class _SilentJournal(InMemoryRuntime):
    """A journal whose lease renewals stop going through once `silent` is set."""

    def __init__(self) -> None:
        super().__init__(lease_seconds=0.3)
        self.silent = asyncio.Event()

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Any:
        if self.silent.is_set():
            raise JournalUnavailable("in memory", "the test's server went silent")
        return await super().renew_lease(run_id, owner, ttl)


async def test_a_runs_way_out_of_a_lease_stop_does_not_hide_why_it_stopped() -> None:
    """Found by a Postgres fault probe: the lease of a budgeted run ran out while its server
    was silent; the run's way out charged the cut-off call to a ledger on the same server and
    raised that `LedgerUnavailable` in place of the lease's `JournalUnavailable`. The lease
    is why the run stopped: its error is raised, the way-out error chained to it."""
    journal = _SilentJournal()
    await journal.start_run(RunRecord("r1", "g", "h", None, None))
    entered = asyncio.Event()

    async def body() -> None:
        async with hold_lease(journal, "r1"):
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise LedgerUnavailable("the ledger", "no answer in time") from None

    task = asyncio.create_task(body())
    async with asyncio.timeout(WAIT):
        await entered.wait()
        journal.silent.set()
        [error] = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(error, JournalUnavailable), repr(error)
    assert "the test's server went silent" in str(error)
    assert isinstance(error.__cause__, LedgerUnavailable), repr(error.__cause__)

"""A worker SIGKILLed while it goes on with a person's answer: the run is a crashed running
run, which another worker recovers (counted as a recovery) within heartbeat + poll, and the
answered call executes exactly once per idempotency key; an answer given meanwhile is refused,
not accepted and dropped.

Real `loomgraph worker` processes on the Postgres server, with `fault_agent` (the tool, or
the node after an interrupt, kills its own process the first time it runs); the side-effect
ledger is a table outside the journal (`fleet_agent`'s docstring).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

import fault_agent
import pg
from fault_fleet import Workers, fleet_env
from loomgraph import Agent
from loomgraph.agent.checkpoints import ApprovalNotPending, ResumeError
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import StandardPermissions
from loomgraph.governance.null import NoHooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus, Event, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime
from test_fleet import sql, until

pg_schema = pg.pg_schema

LEASE = 2.0
HEARTBEAT = 2.0
POLL = 0.5
# What a loaded 2-core machine adds to the documented bound (heartbeat + poll).
SLACK = 10.0


def workers(env: dict[str, str], tmp_path: Path) -> Workers:
    args = ("--heartbeat", str(HEARTBEAT), "--poll", str(POLL), "--concurrency", "2")
    return Workers(env, tmp_path, *args, "--log-level", "warning")


async def _died_and_recovered(agent: Any, run_id: str, fleet: Workers) -> float:
    """Wait for the worker that took the answer to die; check the run is a crashed running
    run; wait until another worker holds it. Seconds from the death to the recovery."""
    [dead] = await until("the worker to die in the answered run", fleet.dead, 60)
    died = time.monotonic()
    assert dead.returncode == -signal.SIGKILL
    runtime = agent.deps.runtime
    lease = await runtime.lease(run_id)
    assert lease is not None and f":{dead.pid}:" in lease.owner  # the dead worker's
    record = await runtime.load_run(run_id)
    # Taken up with its answer under the lease: running, like any run whose worker died.
    assert record.status == RunStatus.RUNNING, (record.status, record.reason)

    async def recovered() -> bool:
        now = await runtime.lease(run_id)
        done = (await runtime.load_run(run_id)).status == RunStatus.COMPLETED
        return done or (now is not None and now.token > lease.token)

    await until("another worker to recover the run", recovered, 60)
    return time.monotonic() - died


@pytest.mark.postgres
@pytest.mark.parametrize("kill_at", ["start", "after_effect"])
async def test_a_worker_killed_in_the_approved_call_leaves_a_run_that_is_recovered(
    pg_schema: str, tmp_path: Path, kill_at: str, restore_env: None
) -> None:
    env = await fleet_env(
        pg_schema,
        tmp_path,
        FLEET_LEASE=str(LEASE),
        FLEET_ASK="1",  # the third `work` call (item "c") waits for a person's approval
        FAULT_KILL_ITEM="c",
        FAULT_KILL_AT=kill_at,
    )
    agent = fault_agent.make()
    fleet = workers(env, tmp_path)
    fleet.start()
    fleet.start()
    try:
        run_id = await agent.submit("ask", user_id="u")
        waiting = await agent.wait(run_id, timeout=60)
        assert waiting.status == RunStatus.AWAITING_APPROVAL and waiting.pending is not None
        await agent.submit_resume(run_id, approve=True)
        took = await _died_and_recovered(agent, run_id, fleet)
        assert took < HEARTBEAT + POLL + SLACK
        # The answer was taken: another one is refused at once (it would settle nothing).
        with pytest.raises(ApprovalNotPending):
            await agent.submit_resume(run_id, approve=False)
        done = await agent.wait(run_id, timeout=60)
        record = await agent.deps.runtime.load_run(run_id)
        effects = await agent.deps.runtime.effects(run_id)
    finally:
        fleet.stop()
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED, (done.status, done.reason)
    assert record.recoveries == 1  # the answered resume that died, recovered once
    approvals = [e for e in effects if e.kind == "approval"]
    assert [(e.status, e.outcome["answer"]) for e in approvals] == [(EffectStatus.DONE, True)]
    tools = {e.key: e for e in effects if e.kind == "tool"}
    approved = f"{run_id}:tools:2:1"  # the third call: second visit of `tools`, slot 1
    assert tools[approved].attempts == 2 and tools[approved].recovered
    # Exactly once per idempotency key, every key the journal's.
    ledger = await sql(f"SELECT key FROM {pg_schema}.ledger WHERE run_id = $1", run_id)
    assert sorted(r[0] for r in ledger) == sorted(tools)
    attempts = await sql(f"SELECT key FROM {pg_schema}.attempts WHERE key = $1", approved)
    # Killed before the effect: it happened once, in the recovery; after it: twice, the
    # second absorbed by the ledger's key.
    assert len(attempts) == (1 if kill_at == "start" else 2)


@pytest.mark.postgres
async def test_a_worker_killed_after_taking_a_value_leaves_a_run_that_is_recovered(
    pg_schema: str, tmp_path: Path, restore_env: None
) -> None:
    env = await fleet_env(
        pg_schema, tmp_path, FLEET_LEASE=str(LEASE), FLEET_INTERRUPT="1", FAULT_KILL_AT="did"
    )
    agent = fault_agent.make()
    fleet = workers(env, tmp_path)
    fleet.start()
    fleet.start()
    try:
        run_id = await agent.submit("count", user_id="u")
        waiting = await agent.wait(run_id, timeout=60)
        assert waiting.status == RunStatus.INTERRUPTED
        await agent.submit_resume(run_id, value=3)
        took = await _died_and_recovered(agent, run_id, fleet)
        assert took < HEARTBEAT + POLL + SLACK
        with pytest.raises(ResumeError, match="not waiting for a value"):
            await agent.submit_resume(run_id, value=4)
        done = await agent.wait(run_id, timeout=60)
        record = await agent.deps.runtime.load_run(run_id)
    finally:
        fleet.stop()
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED and done.output == "did the work 3 times"
    assert record.recoveries == 1


# --------------------------------------------------------------------------- in one process


class StatusAt(NoHooks):
    """Reads the run's journaled status when `node` starts (after the answer was taken)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.runtime: Any = None
        self.seen: list[RunStatus] = []

    async def on_event(self, event: Event) -> None:
        """At `node_started` of the node: the run's status in the journal."""
        if event.kind == "node_started" and event.node == self.node and self.runtime:
            self.seen.append((await self.runtime.load_run(event.run_id)).status)


def _journal(kind: str, tmp_path: Path) -> Any:
    return None if kind == "memory" else SqliteRuntime(tmp_path / "journal.db")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_run_resumed_with_an_approval_is_journaled_running_as_it_goes_on(
    tmp_path: Path, kind: str
) -> None:
    async def pay(to: str) -> str:
        """Pay someone."""
        return f"paid {to}"

    hooks = StatusAt("tools")
    call = {"tool_calls": [{"tool": "pay", "args": {"to": "bob"}}]}
    agent = Agent(
        "x",
        model=ScriptedModel([call, "done"]),
        tools=[pay],
        runtime=_journal(kind, tmp_path),
        permissions=StandardPermissions(ask=["pay"]),
        hooks=hooks,
    )
    hooks.runtime = agent.deps.runtime
    try:
        waiting = await agent.run("pay bob")
        assert waiting.status == RunStatus.AWAITING_APPROVAL and hooks.seen == [RunStatus.RUNNING]
        done = await agent.resume(waiting.run_id, approve=True)
    finally:
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED and done.output == "done"
    # The first visit ran as a new run; the second, with the answer: running, not waiting.
    assert hooks.seen == [RunStatus.RUNNING, RunStatus.RUNNING]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_run_resumed_with_a_value_is_journaled_running_as_it_goes_on(
    tmp_path: Path, kind: str
) -> None:
    hooks = StatusAt("answer")
    agent = Agent(
        "x",
        model=ScriptedModel(["unused"]),
        runtime=_journal(kind, tmp_path),
        architecture=graph_from_yaml(fault_agent.HOW_MANY),
        hooks=hooks,
    )
    hooks.runtime = agent.deps.runtime
    try:
        waiting = await agent.run("count")
        assert waiting.status == RunStatus.INTERRUPTED
        done = await agent.resume(waiting.run_id, value=3)
    finally:
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED and done.output == "did the work 3 times"
    assert hooks.seen == [RunStatus.RUNNING]

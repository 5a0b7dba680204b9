"""Three writers that escaped fencing or counting: a fork's run, the recovery count of a run
that goes on to wait for a person, and a zombie worker's memory episode.

On a real SQLite file; the zombie is made by taking its lease from it, as a second worker
would after the lease expired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest, Transition
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.runtime.errors import LeaseLost
from loomgraph.runtime.sqlite import SqliteRuntime

seen: list[Lease | None] = []


def note(text: str) -> str:
    """Note something down."""
    seen.append(current_fence.get())
    return f"noted {text}"


@tool(destructive=True)
def delete(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


async def test_a_fork_writes_its_run_under_its_own_lease(tmp_path: Path) -> None:
    runtime = SqliteRuntime(tmp_path / "journal.db")
    turn = {"tool_calls": [{"tool": "note", "args": {"text": "a"}}]}
    agent = Agent("x", model=ScriptedModel([turn, "done", turn, "again"]), tools=[note],
                  runtime=runtime)  # fmt: skip
    try:
        first = await agent.run("go")
        assert first.status == "completed"
        seen.clear()
        fork = await agent.fork(first.run_id, at=0)
        assert fork.status == "completed"
        # The fork's writes were fenced with a lease on the fork's run, as any run's are.
        assert len(seen) == 1 and seen[0] is not None
        assert seen[0].run_id == fork.run_id and seen[0].token >= 1
        lease = await runtime.lease(fork.run_id)
        assert lease is None  # taken, then given back when the fork ended
        raw = await runtime._fetch("lease", (fork.run_id,))
        assert raw and int(raw[0][3]) == seen[0].token
    finally:
        await runtime.close()


async def test_a_recovery_that_ends_waiting_for_a_person_forgets_failed_recoveries(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(tmp_path / "journal.db")
    failures = [3]  # the provider fails three times, then works

    def turns(request: ModelRequest) -> Any:
        if failures[0]:
            failures[0] -= 1
            return RuntimeError("provider down")
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "delete", "args": {"path": "/x"}}]}
        return "gone"

    agent = Agent(
        "x",
        model=ScriptedModel(turns),
        tools=[delete],
        runtime=runtime,
        permissions=StandardPermissions(),
        max_recoveries=3,
    )
    try:
        failed = await agent.run("clean")
        assert failed.status == "failed"
        for count in (1, 2):
            again = await agent.resume(failed.run_id)
            assert again.status == "failed"
            record = await runtime.load_run(failed.run_id)
            assert record is not None and record.recoveries == count
        waiting = await agent.resume(failed.run_id)  # the third recovery reaches the ask
        assert waiting.status == "awaiting_approval"
        record = await runtime.load_run(failed.run_id)
        assert record is not None and record.recoveries == 0
        done = await agent.resume(failed.run_id, approve=True)
        assert done.status == "completed" and done.output == "gone"
    finally:
        await runtime.close()


class Thief:
    """A journal whose lease is taken by another worker right after the run's last
    transition: the worker writing it is a zombie from then on."""

    def __init__(self, inner: SqliteRuntime) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_transition(self, transition: Transition) -> None:
        await self.inner.append_transition(transition)
        if transition.next_node == "END":
            held = await self.inner.lease(transition.run_id)
            assert held is not None
            await self.inner.acquire_lease(transition.run_id, "thief", take_from=held.owner)


async def test_a_zombie_worker_stores_no_memory_episode(tmp_path: Path) -> None:
    inner = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent("x", model=ScriptedModel(["zombie answer"]), runtime=Thief(inner),
                  memory="memory")  # fmt: skip
    try:
        with pytest.raises(LeaseLost):
            await agent.run("hello", user_id="u1")
        assert await agent.deps.memory.episodes("u1") == []  # type: ignore[attr-defined]
        (run,) = await inner.runs()
        assert run.status == "running" and run.result is None  # the new holder's to finish
    finally:
        await inner.close()


@pytest.mark.parametrize("fork", [False, True])
async def test_a_run_cancelled_as_it_starts_is_journaled_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    """Cancelled after the run was journaled but before its graph ran (while `run_started`
    goes out): the journal says cancelled, not running for ever; a fork's new run too."""
    import asyncio

    from loomgraph.agent.session import AgentSession
    from loomgraph.protocols import RunStatus

    runtime = SqliteRuntime(tmp_path / "journal.db")
    agent = Agent("x", model=ScriptedModel(["one", "two"]), runtime=runtime)
    first = await agent.run("hi") if fork else None

    async def cancelled(self: AgentSession, scope: Any) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(AgentSession, "_announce", cancelled)
    try:
        with pytest.raises(asyncio.CancelledError):
            if first is not None:
                await agent.fork(first.run_id, at=0)
            else:
                await agent.run("hi")
        (record,) = [r for r in await runtime.runs() if r.status != RunStatus.COMPLETED]
        assert record.status == RunStatus.CANCELLED
        assert await runtime.transitions(record.run_id) == []
    finally:
        await runtime.close()

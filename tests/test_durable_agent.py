"""An Agent on the SQLite journal: a run resumed by a second Agent (as after a restart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loomgraph import Agent
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.runtime import SqliteRuntime


async def test_resume_from_the_sqlite_journal_in_a_new_agent(tmp_path: Path) -> None:
    ledger: list[str] = []

    async def charge(amount: int, idempotency_key: str) -> str:
        """Charge once per key."""
        ledger.append(idempotency_key)
        return f"charged {amount}"

    def failing(request: ModelRequest) -> object:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "charge", "args": {"amount": 5}}]}
        raise RuntimeError("provider down")

    path = tmp_path / "journal.db"
    first = Agent("x", model=ScriptedModel(failing), tools=[charge], runtime=f"sqlite:{path}")
    failed = await first.run("pay", user_id="alice")
    assert failed.status == "failed"
    await first.deps.runtime.close()  # type: ignore[attr-defined]

    runtime = SqliteRuntime(str(path))
    second = Agent("x", model=ScriptedModel(lambda r: "paid"), tools=[charge], runtime=runtime)
    resumed = await second.resume(failed.run_id)
    assert resumed.status == "completed" and resumed.output == "paid"
    assert len(ledger) == 1  # the charge was not made twice
    history = await second.history(failed.run_id)
    assert [c.node for c in history] == ["", "model", "tools", "model"]
    assert (await second.runs(user_id="alice"))[0].run_id == failed.run_id
    await runtime.close()


async def test_a_run_in_progress_cannot_be_resumed_by_another_worker(tmp_path: Path) -> None:
    import asyncio

    import pytest

    from loomgraph.runtime import RunConflict

    inside, release = asyncio.Event(), asyncio.Event()
    ledger: list[str] = []

    async def slow(idempotency_key: str) -> str:
        """Wait until released."""
        ledger.append(idempotency_key)
        inside.set()
        await release.wait()
        return "done"

    path = tmp_path / "journal.db"
    script = ScriptedModel([{"tool_calls": [{"tool": "slow"}]}, "finished"])
    worker_a = Agent("x", model=script, tools=[slow], runtime=SqliteRuntime(str(path)))
    worker_b = Agent("x", model=script, tools=[slow], runtime=SqliteRuntime(str(path)))
    session = worker_a.session("go")
    running = asyncio.create_task(session.execute(worker_a.deps.hooks.on_event))
    await inside.wait()
    with pytest.raises(RunConflict):
        await worker_b.resume(session.run_id)
    release.set()
    assert (await running).output == "finished"
    assert len(ledger) == 1  # worker B executed nothing
    again = await worker_b.resume(session.run_id)  # finished: the stored result, no work
    assert again.output == "finished" and len(ledger) == 1
    for agent in (worker_a, worker_b):
        await agent.deps.runtime.close()  # type: ignore[attr-defined]


async def test_resume_stream_yields_the_resumed_part_with_the_shapes_of_stream(
    tmp_path: Path,
) -> None:
    def failing(request: ModelRequest) -> object:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "echo_back", "args": {"text": "hi"}}]}
        raise RuntimeError("provider down")

    def echo_back(text: str) -> str:
        """Echo the text."""
        return text

    path = f"sqlite:{tmp_path / 'journal.db'}"
    first = Agent("x", model=ScriptedModel(failing), tools=[echo_back], runtime=path)
    failed = await first.run("go")
    assert failed.status == "failed"
    await first.aclose()
    second = Agent("x", model=ScriptedModel(lambda r: "done"), tools=[echo_back], runtime=path)
    events = [e async for e in second.resume_stream(failed.run_id)]
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    assert all(e.run_id == failed.run_id for e in events)
    # Only the resumed part: the journaled first model turn and tool call are not re-emitted.
    assert "tool_call" not in kinds and "model_chunk" in kinds
    assert events[-1].payload["result"]["status"] == "completed"
    assert events[-1].payload["output"] == "done"
    seqs = [e.seq for e in events if e.kind == "node_completed"]
    assert seqs == sorted(seqs) and seqs[0] > 2  # it goes on after the journaled transitions
    # A refusal surfaces from the stream, as from resume().
    again = second.resume_stream(failed.run_id, approve=True)
    with pytest.raises(ResumeError):
        async for _ in again:
            pass
    await second.aclose()

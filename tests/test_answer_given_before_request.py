"""An answer approves no request the run asked after the answer was given.

Found by a probe following docs/governance.md ("of two concurrent approvals of one call
exactly one is used … the other resume is refused (`ApprovalNotPending`) even when the run
waits for a later call by then, one with the same call id included"): two Agents on one
journal both resumed a run waiting to pay 5 with `approve=True`. The second read the journal
only after the first had paid 5 and the run had stopped again, at a request to pay 7 for a
call of the same id (`p1`); the shorthand bound to that request, and 7 was paid though
nobody had seen it. An answer that does not name its request now carries when it was given
(the resume's start), and a request asked after that is not its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, Approval, tool
from loomgraph.agent.answers import approval, pending_of
from loomgraph.agent.resume_errors import ApprovalNotPending
from loomgraph.engine.effects import BoundApproval
from loomgraph.models import ScriptedModel

BOUND = 30.0


def _payer(journal: Path, paid: list[int]) -> Agent:
    @tool(destructive=True)
    async def pay(amount: int) -> str:
        """Pay an amount."""
        paid.append(amount)
        return "paid"

    # The model asks to pay 5, then 7 with the same call id.
    script: list[Any] = [
        {"tool_calls": [{"id": "p1", "tool": "pay", "args": {"amount": 5}}]},
        {"tool_calls": [{"id": "p1", "tool": "pay", "args": {"amount": 7}}]},
        "done",
    ]
    return Agent("x", model=ScriptedModel(script), tools=[pay], runtime=f"sqlite:{journal}")


@pytest.mark.parametrize("approve", [True, Approval("p1", True)], ids=["shorthand", "keyless"])
async def test_a_late_read_answer_does_not_approve_the_next_request(
    tmp_path: Path, approve: Any
) -> None:
    paid: list[int] = []
    first, second = _payer(tmp_path / "j.db", paid), _payer(tmp_path / "j.db", paid)
    run_id = (await first.run("pay")).run_id
    # The second answer is given now, but its resume reads the journal only later.
    reading, go = asyncio.Event(), asyncio.Event()
    load_run = second.deps.runtime.load_run

    async def late(run: str) -> Any:
        reading.set()
        await go.wait()
        return await load_run(run)

    second.deps.runtime.load_run = late  # type: ignore[method-assign]
    late_answer = asyncio.create_task(second.resume(run_id, approve=approve))
    try:
        async with asyncio.timeout(BOUND):
            await reading.wait()
            moved_on = await first.resume(run_id, approve=approve)
            assert moved_on.status == "awaiting_approval" and paid == [5]
            assert moved_on.pending is not None and moved_on.pending.call is not None
            assert moved_on.pending.call["args"] == {"amount": 7}
            go.set()
            with pytest.raises(ApprovalNotPending, match="after this answer was given"):
                await late_answer
    finally:
        go.set()
        second.deps.runtime.load_run = load_run  # type: ignore[method-assign]
    assert paid == [5]  # 7 was not paid on an answer given before it was asked
    record = await first.deps.runtime.load_run(run_id)
    assert record is not None and str(record.status) == "awaiting_approval"
    # Asked again now, after the request: the same answer goes on.
    done = await second.resume(run_id, approve=approve)
    assert done.status == "completed" and paid == [5, 7]
    await first.aclose()
    await second.aclose()


async def test_an_answer_naming_its_request_is_bound_to_it_whenever_given(
    tmp_path: Path,
) -> None:
    """`given_at` concerns answers that do not name their request: one that names it (its
    `key`, as the HTTP API and the viewer send) is that request's, given when it may be."""
    paid: list[int] = []
    agent = _payer(tmp_path / "j.db", paid)
    record = await agent.deps.runtime.load_run((await agent.run("pay")).run_id)
    assert record is not None
    pending = pending_of(record)
    assert pending is not None and pending.asked_at is not None
    before = pending.asked_at - 1.0
    named = BoundApproval("p1", True, key=pending.key)
    assert approval(record, named, before).key == pending.key
    with pytest.raises(ApprovalNotPending, match="after this answer was given"):
        approval(record, True, before)
    assert approval(record, True, pending.asked_at).key == pending.key  # given then: its own
    await agent.aclose()

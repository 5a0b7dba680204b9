"""A plain process (no server, no worker) sends on its runs nobody answered in time:
`Agent.send_on_expired()` resumes each of the agent's runs whose approval request expired,
the call denied as timed out, and leaves alone a run still in time, a request without a
deadline, and another agent's run. Against a SQLite journal file; the desk's clock is moved
on by the test, never slept on."""

from __future__ import annotations

from pathlib import Path

import desk_clock
from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus

clock = desk_clock.clock

PAID: list[str] = []
PAY = {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme"}}]}


@tool
def pay(to: str) -> str:
    """Pay someone."""
    PAID.append(to)
    return f"paid {to}"


def desk(journal: Path, name: str = "desk", timeout: float | None = 60) -> Agent:
    return Agent(
        "x",
        model=ScriptedModel(lambda request: PAY if request.call_index % 2 == 0 else "done"),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=timeout),
        runtime=f"sqlite:{journal}",
        name=name,
    )


async def test_send_on_expired_ends_only_the_runs_nobody_answered_in_time(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    PAID.clear()
    journal = tmp_path / "journal.db"
    async with desk(journal) as a, desk(journal, name="other") as other:
        late = await a.run("pay", user_id="alice")
        theirs = await other.run("pay", user_id="alice")
        assert late.status == theirs.status == RunStatus.AWAITING_APPROVAL
        assert await a.send_on_expired() == []  # in time: a person may still answer
        clock.offset += 120
        fresh = await a.run("pay", user_id="bob")  # asked now: its deadline is ahead
        sent = await a.send_on_expired()
        assert [r.run_id for r in sent] == [late.run_id]
        assert sent[0].status == RunStatus.COMPLETED
        assert PAID == []  # the call was denied, never run
        history = await a.history(late.run_id)
        tool_messages = [m for m in history[-1].state["messages"] if m.get("role") == "tool"]
        assert ["approval timed out" in m["content"] for m in tool_messages] == [True]
        for waiting in (fresh, theirs):
            record = await a.deps.runtime.load_run(waiting.run_id)
            assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
        assert await a.send_on_expired() == []  # it waits no more


async def test_send_on_expired_leaves_a_request_without_a_deadline(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    PAID.clear()
    async with desk(tmp_path / "journal.db", timeout=None) as a:
        waiting = await a.run("pay", user_id="alice")
        clock.offset += 10**7
        assert await a.send_on_expired() == []
        record = await a.deps.runtime.load_run(waiting.run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL

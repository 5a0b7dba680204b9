"""A call asked about before the run stopped is still held to the rules that deny, when its
approval comes. Found by probing: with a blocklist kept as a callable set (called at each
check, so a directory lookup stays current), `pay(to="mallory")` asked; mallory was
blocklisted while it waited; `resume(approve=True)` paid her — while the same approval with
its arguments repeated as an edit was denied (an edit meets the rules again), and in a
parallel plan the second branch's request, journaled before the blocklist changed, was still
asked about and paid too. A deny rule is a hard limit no approval lifts, however the yes is
spelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent, tool
from loomgraph.engine.effects import Approval
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus

PAID: list[str] = []
BLOCKED: set[str] = set()
PAY = {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "mallory", "amount": 10}}]}


@tool
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    PAID.append(to)
    return f"paid {amount} to {to}"


def blocked() -> list[str]:
    return sorted(BLOCKED)


def desk(journal: Path) -> Agent:
    permissions = StandardPermissions(
        ask=["pay"], deny=["pay(to in $blocked)"], sets={"blocked": blocked}
    )
    return Agent(
        "x",
        model=ScriptedModel([PAY, "done"]),
        tools=[pay],
        permissions=permissions,
        runtime=f"sqlite:{journal}",
    )


ANSWERS: dict[str, Any] = {
    "True": True,
    "args": {"args": {"to": "mallory", "amount": 10}},
    "Approval": Approval("c1", True),
}


@pytest.mark.parametrize("answer", ANSWERS)
async def test_an_approval_never_releases_a_call_the_rules_now_deny(
    tmp_path: Path, answer: str
) -> None:
    PAID.clear()
    BLOCKED.clear()
    async with desk(tmp_path / "journal.db") as a:
        stopped = await a.run("pay mallory", user_id="alice")
        assert stopped.status == RunStatus.AWAITING_APPROVAL
        BLOCKED.add("mallory")  # blocklisted while the request waits
        done = await a.resume(stopped.run_id, approve=ANSWERS[answer])
        assert done.status == RunStatus.COMPLETED, done.reason
        assert PAID == []
        messages = (await a.history(stopped.run_id))[-1].state["messages"]
        [result] = [m for m in messages if m.get("role") == "tool"]
        assert "denied by rule 'pay(to in $blocked)'" in result["content"], result["content"]


async def test_a_call_the_rules_still_ask_about_is_released_by_its_approval(
    tmp_path: Path,
) -> None:
    PAID.clear()
    BLOCKED.clear()
    async with desk(tmp_path / "journal.db") as a:
        stopped = await a.run("pay mallory", user_id="alice")
        BLOCKED.add("bob")  # someone else
        done = await a.resume(stopped.run_id, approve=True)
        assert done.status == RunStatus.COMPLETED and PAID == ["mallory"]


@settings(max_examples=25, deadline=None)
@given(blocked_meanwhile=st.booleans(), answer=st.sampled_from(sorted(ANSWERS)))
def test_no_approval_runs_a_call_denied_when_it_is_used(
    tmp_path_factory: pytest.TempPathFactory, blocked_meanwhile: bool, answer: str
) -> None:
    import asyncio

    async def one() -> None:
        PAID.clear()
        BLOCKED.clear()
        async with desk(tmp_path_factory.mktemp("j") / "journal.db") as a:
            stopped = await a.run("pay mallory", user_id="alice")
            if blocked_meanwhile:
                BLOCKED.add("mallory")
            await a.resume(stopped.run_id, approve=ANSWERS[answer])
        expected = [] if blocked_meanwhile else ["mallory"]
        assert expected == PAID

    asyncio.run(one())

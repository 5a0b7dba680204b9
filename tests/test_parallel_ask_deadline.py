"""A parallel branch's approval request starts its deadline when someone can be shown it.

Found by probing governance in composite graphs: in a parallel plan, every branch that asked
journaled its request at once, each with its deadline, while the run stopped at one of them
(a run shows one request at a time). The others' clocks ran while nobody could see them:
answered after the first, the second was shown with what was left of its time, or had
expired unseen and was denied as timed out. Now only the request the run stops at is
journaled; a sibling that asks meanwhile stops without journaling its own, and asks again —
its deadline starting then — when the resume reaches it.
"""

from __future__ import annotations

import time
from pathlib import Path

import desk_clock
from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.protocols import RunStatus
from payment_plans import planner

clock = desk_clock.clock

HOUR = 3600.0
PAID: list[str] = []


@tool
def pay(to: str) -> str:
    """Pay someone."""
    PAID.append(to)
    return f"paid {to}"


def desk(tmp: Path, steps: tuple[str, ...]) -> Agent:
    return Agent(
        "x",
        model=planner(steps, parallel=True),
        tools=[pay],
        architecture="plan-execute",
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=HOUR),
        runtime=f"sqlite:{tmp / 'journal.db'}",
    )


async def test_the_second_request_gets_its_whole_time_once_shown(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    PAID.clear()
    async with desk(tmp_path, ("ann", "bob")) as a:
        first = await a.run("pay them", user_id="alice")
        assert first.status == RunStatus.AWAITING_APPROVAL and first.pending is not None
        clock.offset += 50 * 60  # the first is answered 50 minutes later
        second = await a.resume(first.run_id, approve=True)
        assert second.status == RunStatus.AWAITING_APPROVAL, second.reason
        assert second.pending is not None and second.pending.deadline is not None
        assert second.pending.call is not None
        assert second.pending.call["args"] != first.pending.call["args"]  # type: ignore[index]
        # Its hour starts when it is shown.
        assert second.pending.deadline >= time.time() + clock.offset + HOUR - 60
        clock.offset += 50 * 60  # answered 50 minutes after it was shown
        done = await a.resume(first.run_id, approve=True)
        assert done.status == RunStatus.COMPLETED, done.reason
    assert sorted(PAID) == ["ann", "bob"]


async def test_only_the_request_a_run_stops_at_is_journaled(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    """Three branches ask at once: one request is journaled, shown, and answered at a time."""
    PAID.clear()
    async with desk(tmp_path, ("ann", "bob", "cy")) as a:
        result = await a.run("pay them", user_id="alice")
        shown: list[str] = []
        while result.status == RunStatus.AWAITING_APPROVAL:
            assert result.pending is not None and result.pending.call is not None
            shown.append(result.pending.call["args"]["to"])
            requests = [
                e
                for e in await a.deps.runtime.effects(result.run_id)
                if e.kind == "approval_request"
            ]
            assert len(requests) == len(shown), requests  # the one it stops at, and the answered
            clock.offset += 50 * 60
            result = await a.resume(result.run_id, approve=True)
        assert result.status == RunStatus.COMPLETED, result.reason
    assert sorted(shown) == ["ann", "bob", "cy"]
    assert sorted(PAID) == ["ann", "bob", "cy"]

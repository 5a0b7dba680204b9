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

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import desk_clock
from loomgraph import Agent, tool
from loomgraph.engine.scope import active_scope
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.nodes.concurrency import run_all
from loomgraph.protocols import RunStatus, RunStopped
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


# A map whose branch `v…` asks a question (an `interrupt`) while its sibling asks approval.
CHILD = """
name: question-or-payment
entry: start
state:
  note: {type: str, default: ""}
  answer: {type: str, default: ""}
nodes:
  start: {kind: function, call: 'test_parallel_ask_deadline:start', reads: [input], writes: [note]}
  ask: {kind: interrupt, request: str, message: 'a value, please', output: answer, reads: [note]}
  act: {kind: function, call: 'test_parallel_ask_deadline:act', reads: [input], writes: [note]}
  done: {kind: function, call: 'test_parallel_ask_deadline:done', reads: [note], writes: [output]}
edges:
  - {from: start, to: ask, when: "note == 'question'"}
  - {from: start, to: act}
  - {from: ask, to: done}
  - {from: act, to: done}
  - {from: done, to: END}
"""
PARENT = """
name: questions-and-payments
entry: prep
state:
  items: {type: 'list[str]'}
  results: {type: 'list[str]', default: []}
nodes:
  prep: {kind: function, call: 'test_parallel_ask_deadline:prep', reads: [input], writes: [items]}
  each: {kind: map, graph: child.yaml, over: items, output: results, concurrency: 2}
edges:
  - {from: prep, to: each}
  - {from: each, to: END}
"""


def prep(state: dict[str, Any]) -> dict[str, Any]:
    return {"items": state["input"].split()}


def start(state: dict[str, Any]) -> dict[str, Any]:
    return {"note": "question" if state["input"].startswith("v") else "payment"}


async def act(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Pay the item, once the sibling's question stops the run (the first time: a bounded
    wait that yields to it, on the run's own flag; on a resume the answer is there)."""
    scope = active_scope.get()
    for _ in range(10_000):
        if scope is None or scope.asking or PAID:
            break
        await asyncio.sleep(0)
    result = await ctx.call_tool({"id": "c-pay", "tool": "pay", "args": {"to": state["input"]}})
    return {"note": result["content"]}


def done(state: dict[str, Any]) -> dict[str, Any]:
    return {"output": state["note"]}


async def test_a_request_behind_a_siblings_question_gets_its_whole_time(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    """The question stops the run first: the payment's request is journaled only when the
    resume that answers the question reaches it, its hour starting then."""
    PAID.clear()
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "graph.yaml").write_text(PARENT)
    agent = Agent(
        "x",
        model=ScriptedModel(["unused"]),
        tools=[pay],
        architecture=str(tmp_path / "graph.yaml"),
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=HOUR),
        runtime=f"sqlite:{tmp_path / 'journal.db'}",
    )
    async with agent as a:
        asked = await a.run("v1 bob", user_id="alice")
        assert asked.status == RunStatus.INTERRUPTED, asked.reason
        requests = [
            e for e in await a.deps.runtime.effects(asked.run_id) if e.kind == "approval_request"
        ]
        assert requests == []  # nobody can be shown it yet
        clock.offset += 70 * 60  # the question is answered 70 minutes later
        shown = await a.resume(asked.run_id, value="yes")
        assert shown.status == RunStatus.AWAITING_APPROVAL, shown.reason
        assert shown.pending is not None and shown.pending.deadline is not None
        assert shown.pending.deadline >= time.time() + clock.offset + HOUR - 60
        clock.offset += 50 * 60
        paid = await a.resume(asked.run_id, approve=True)
        assert paid.status == RunStatus.COMPLETED, paid.reason
    assert PAID == ["bob"]


async def test_a_journaled_request_is_shown_before_a_siblings_question() -> None:
    """A branch's `interrupt` reads the journal once before it stops; a sibling that journals
    its approval request in that moment stops too, not deferred. The request (its deadline
    running) is the stop shown; the question, which journals nothing and has no deadline,
    is asked again when the resume reaches it. Before, the first stop raised won, and the
    request's hour ran while only the question was shown."""
    asking, questioned = asyncio.Event(), asyncio.Event()

    async def question() -> None:
        await asyncio.wait_for(asking.wait(), 30)
        questioned.set()
        raise RunStopped(RunStatus.INTERRUPTED, "waiting for a value")

    async def request() -> None:
        asking.set()
        await asyncio.wait_for(questioned.wait(), 30)
        raise RunStopped(RunStatus.AWAITING_APPROVAL, "tool 'pay' needs approval")

    with pytest.raises(RunStopped) as stopped:
        await run_all([question, request], 2)
    assert stopped.value.status == RunStatus.AWAITING_APPROVAL

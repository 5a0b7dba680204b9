"""Approvals end to end: no call runs unless an approval of that very call (its request, its
arguments, in time) said yes, and no approval is used twice.

What it checks:

1. Of two concurrent resumes answering one pending call (the shorthand `approve=True`, or a
   keyless `Approval(call_id, ...)`), one is used; the other, checked again under the run's
   lease against the request it was bound to first, is refused (`ApprovalNotPending`) and
   never lands on the run's next call, even one reusing the call id. A value alike
   (`ValueNotPending`): it never answers the next question.
2. The approval handler is given a copy of the call: changing it in place runs nothing
   changed and leaves the model's journaled call as it was; only arguments it returns as an
   edit count, and those meet the rules again.
3. An approval handler's answer that comes back after the request's deadline (the journaled
   request's, or the rule's timeout counted from when the handler was asked) denies the
   call as timed out (approver `timeout`).
4. A user's own `approval_timeout_s` holds for every ask of hers without a timeout of its
   own: her mode's, a global rule's, a policy's, a taint ask.
5. `InMemoryRuntime` keeps a run's result as its own copy: what a caller changes in a
   returned result, or in a record it read, never changes the journal.
6. The viewer's "unchanged edit" check compares arguments as JSON (`true` is not `1`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import desk_clock
from loomgraph import Agent, Approval, tool
from loomgraph.agent.checkpoints import ApprovalNotPending, ResumeError, ValueNotPending
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Decision, EffectStatus, RunRecord, RunStatus, ToolCall
from loomgraph.runtime import InMemoryRuntime, SqliteRuntime
from test_approval_binding import BOB, GatedRuntime, ledger, pay, wipe

PROD = {"target": "prod"}


@pytest.fixture(autouse=True)
def _clear_ledger() -> None:
    ledger.clear()


def turn(*calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A model turn of tool calls given as (id, tool, args)."""
    return {"tool_calls": [{"id": i, "tool": t, "args": a} for i, t, a in calls]}


async def tool_messages(agent: Agent, run_id: str) -> list[dict[str, Any]]:
    history = await agent.history(run_id)
    return [m for m in history[-1].state["messages"] if m.get("role") == "tool"]


clock = desk_clock.clock


async def race(agent: Agent, runtime: GatedRuntime, run_id: str, **answer: Any) -> Any:
    """Two resumes of `run_id` with the same `answer`: the first is checked against what the
    run waits for, then held before the lease while the second goes on with the run. The
    second's result and the first's refusal (None when it was not refused)."""
    gate = asyncio.Event()
    runtime.gate = gate
    late = asyncio.create_task(agent.resume(run_id, **answer))
    await asyncio.wait_for(runtime.entered.wait(), 30)
    second = await agent.resume(run_id, **answer)
    gate.set()
    try:
        await asyncio.wait_for(late, 30)
    except ResumeError as err:
        return second, err
    return second, None


# ------------------------------------------------- 1. an approval moves to a later call


def _pay_then_wipe(runtime: GatedRuntime, *, second_id: str) -> Agent:
    """An agent asked about both calls: the model pays bob (call `a`), then wipes prod (call
    `second_id`)."""
    script = [turn(("a", "pay", BOB)), turn((second_id, "wipe", PROD)), "done"]
    rules = StandardPermissions(ask=["pay", "wipe"])
    return Agent(
        "x", model=ScriptedModel(script), tools=[pay, wipe], runtime=runtime, permissions=rules
    )


async def test_a_concurrent_shorthand_approval_is_refused_not_moved_to_the_next_call() -> None:
    runtime = GatedRuntime()
    agent = _pay_then_wipe(runtime, second_id="b")
    first = await agent.run("go")
    assert first.status == "awaiting_approval" and first.pending is not None
    assert first.pending.call is not None and first.pending.call["tool"] == "pay"
    second, refused = await race(agent, runtime, first.run_id, approve=True)
    assert second.status == "awaiting_approval" and second.pending is not None
    assert second.pending.call is not None and second.pending.call["tool"] == "wipe"
    assert ledger == [("pay", BOB)], "an approval given for pay(bob, 1) ran wipe(prod)"
    assert isinstance(refused, ApprovalNotPending)
    # The run still waits for wipe, unanswered.
    record = await runtime.load_run(first.run_id)
    assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
    assert record.result is not None and record.result["pending"]["call"]["tool"] == "wipe"


async def test_a_concurrent_keyless_approval_never_lands_on_a_later_call_with_its_id() -> None:
    """The model reuses call id `a`: a keyless `Approval("a", True)` checked against
    `pay`'s request is refused once the run waits for `wipe`'s (same id, another request)."""
    runtime = GatedRuntime()
    agent = _pay_then_wipe(runtime, second_id="a")
    first = await agent.run("go")
    assert first.pending is not None and first.pending.call is not None
    second, refused = await race(agent, runtime, first.run_id, approve=Approval("a", True))
    assert second.pending is not None and second.pending.call is not None
    assert second.pending.call == {"id": "a", "tool": "wipe", "args": PROD}
    assert isinstance(refused, ApprovalNotPending)
    assert ledger == [("pay", BOB)], "an approval of pay ran wipe, which shares its call id"
    done = await agent.resume(first.run_id, approve=False)
    assert done.status == "completed" and ledger == [("pay", BOB)]


TWO_QUESTIONS = """
name: two-questions
entry: first
state:
  one: {type: int}
  two: {type: int}
nodes:
  first: {kind: interrupt, request: int, message: 'How many?', output: one}
  second: {kind: interrupt, request: int, message: 'How many more?', output: two}
edges:
  - {from: first, to: second}
  - {from: second, to: END}
"""


async def test_a_concurrent_value_never_answers_the_next_question() -> None:
    runtime = GatedRuntime()
    agent = Agent(
        "x",
        model=ScriptedModel(["unused"]),
        runtime=runtime,
        architecture=graph_from_yaml(TWO_QUESTIONS),
    )
    first = await agent.run("go")
    assert first.status == "interrupted" and first.pending is not None
    second, refused = await race(agent, runtime, first.run_id, value=3)
    assert second.status == "interrupted" and second.pending is not None
    assert second.pending.node == "second"
    assert isinstance(refused, ValueNotPending), "a value for `first` answered `second`"
    record = await runtime.load_run(first.run_id)
    assert record is not None and record.status == RunStatus.INTERRUPTED
    done = await agent.resume(first.run_id, value=4)
    assert done.status == "completed"
    [*_, last] = await agent.history(first.run_id)
    assert (last.state["one"], last.state["two"]) == (3, 4)


# ------------------------------------------- 2. the handler edits the call in place


async def test_an_approval_handler_is_given_a_copy_of_the_call() -> None:
    def handler(call: ToolCall, decision: Decision) -> bool:
        call["args"]["amount"] = 9000
        return True

    agent = Agent(
        "x",
        model=ScriptedModel([turn(("a", "pay", BOB)), "done"]),
        tools=[pay],
        approval_handler=handler,
        permissions=StandardPermissions(ask=["pay"], deny=["pay(amount>5000)"]),
    )
    result = await agent.run("go")
    assert result.status == "completed"
    assert ("pay", {"to": "bob", "amount": 9000}) not in ledger, (
        "a call a deny rule denies ran, changed by the approval handler in place"
    )
    assert ledger == [("pay", BOB)]  # the call it was shown, as shown
    history = await agent.history(result.run_id)
    asked = history[-1].state["messages"][1]["tool_calls"][0]["args"]
    assert asked == BOB, f"the model's journaled call was rewritten to {asked}"


async def test_a_handlers_returned_edit_counts_and_meets_the_rules_again() -> None:
    def handler(call: ToolCall, decision: Decision) -> Any:
        return {"args": {**call["args"], "amount": 9000}}

    agent = Agent(
        "x",
        model=ScriptedModel([turn(("a", "pay", BOB)), "done"]),
        tools=[pay],
        approval_handler=handler,
        permissions=StandardPermissions(ask=["pay"], deny=["pay(amount>5000)"]),
    )
    result = await agent.run("go")
    assert result.status == "completed" and ledger == []
    [message] = await tool_messages(agent, result.run_id)
    assert message["is_error"] and "pay(amount>5000)" in message["content"]


# --------------------------------------------------- 3. timeouts of in-process answers


async def test_an_answer_given_after_the_requests_deadline_does_not_approve(
    clock: type[desk_clock.Clock],
) -> None:
    runtime = InMemoryRuntime()

    def permissions() -> StandardPermissions:
        return StandardPermissions(ask=[{"rule": "pay", "approval_timeout_s": 60}])  # type: ignore[list-item]

    script = [turn(("a", "pay", BOB)), "done"]
    asking = Agent(
        "x", model=ScriptedModel(script), tools=[pay], runtime=runtime, permissions=permissions()
    )
    first = await asking.run("go")
    assert first.status == "awaiting_approval" and first.pending is not None
    assert first.pending.deadline is not None

    async def slow_person(call: ToolCall, decision: Decision) -> bool:
        clock.offset += 3600  # answered an hour after being asked
        return True

    answering = Agent(
        "x",
        model=ScriptedModel(script),
        tools=[pay],
        runtime=runtime,
        permissions=permissions(),
        approval_handler=slow_person,
    )
    done = await answering.resume(first.run_id)
    assert done.status == "completed"
    assert ledger == [], "the call ran on an answer given an hour after its deadline"
    [message] = await tool_messages(answering, first.run_id)
    assert "approval timed out" in message["content"]
    [answer] = [
        e
        for e in await runtime.effects(first.run_id)
        if e.kind == "approval" and e.status == EffectStatus.DONE
    ]
    assert answer.outcome is not None
    assert (answer.outcome["answer"], answer.outcome["by"]) == (False, "timeout")


@pytest.mark.parametrize(("took", "runs"), [(59.0, True), (61.0, False)])
async def test_a_handler_asked_first_has_the_rules_timeout_from_when_it_was_asked(
    clock: type[desk_clock.Clock], took: float, runs: bool
) -> None:
    """No request journaled: the deadline is the rule's timeout counted from the ask."""

    def handler(call: ToolCall, decision: Decision) -> bool:
        clock.offset += took
        return True

    agent = Agent(
        "x",
        model=ScriptedModel([turn(("a", "pay", BOB)), "done"]),
        tools=[pay],
        approval_handler=handler,
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=60),
    )
    result = await agent.run("go")
    assert result.status == "completed"
    assert ledger == ([("pay", BOB)] if runs else [])
    [message] = await tool_messages(agent, result.run_id)
    assert ("approval timed out" in message["content"]) is not runs


async def test_a_users_own_approval_timeout_applies_to_asks_of_her_own_mode() -> None:
    agent = Agent(
        "x",
        model=ScriptedModel([turn(("a", "pay", BOB)), "done"]),
        tools=[pay],
        permissions=StandardPermissions(
            per_user={"alice": {"mode": "default", "approval_timeout_s": 5}}
        ),
    )
    result = await agent.run("go", user_id="alice")
    assert result.status == "awaiting_approval" and result.pending is not None
    pending = result.pending
    assert pending.deadline is not None, f"alice's request ({pending.rule}) never expires"
    assert pending.asked_at is not None
    assert pending.deadline - pending.asked_at == pytest.approx(5.0)


def test_a_users_timeout_holds_for_every_ask_without_its_own() -> None:
    """The rule's own timeout, else its user's, else the global one — for a rule of the
    user's entry, a global rule, the mode, a policy and a taint ask alike."""
    perms = StandardPermissions(
        ask=["wipe", {"rule": "pay", "approval_timeout_s": 30}],  # type: ignore[list-item]
        approval_timeout_s=600,
        per_user={"alice": {"ask": ["send"], "approval_timeout_s": 5}, "bob": {"ask": ["x"]}},
    )
    assert perms.approval_timeout("user:alice:ask:send", user_id="alice") == 5
    for rule in ("ask:wipe", "mode:default:destructive", "policy:mine", "taint:egress"):
        assert perms.approval_timeout(rule, user_id="alice") == 5, rule
        assert perms.approval_timeout(rule, user_id="bob") == 600, rule  # bob has none
        assert perms.approval_timeout(rule, user_id="carol") == 600, rule  # no entry
    assert perms.approval_timeout("ask:pay", user_id="alice") == 30  # the rule's own
    assert perms.approval_timeout("ask:wipe") == 600  # no user: the global one
    assert StandardPermissions().approval_timeout("ask:x", user_id="alice") is None


def test_a_user_id_holding_ask_does_not_take_another_users_timeout() -> None:
    """User "a:ask:b" has no timeout of her own; user "a" gives her rule "b" one of 1 s. An
    ask of "a:ask:b"'s call by the global rule "b…" must not wait only 1 s because its rule
    name also reads as user "a"'s."""
    perms = StandardPermissions(
        approval_timeout_s=600,
        per_user={
            "a": {"ask": [{"rule": "b:ask:x", "approval_timeout_s": 1}]},  # type: ignore[list-item]
            "a:ask:b": {"ask": ["x"]},
        },
    )
    assert perms.approval_timeout("user:a:ask:b:ask:x", user_id="a") == 1
    assert perms.approval_timeout("user:a:ask:b:ask:x", user_id="a:ask:b") == 600


# ------------------------------------------------ 5. the result aliases the journal


async def test_a_result_read_by_the_caller_does_not_change_the_journaled_request() -> None:
    agent = Agent(
        "x",
        model=ScriptedModel([turn(("a", "pay", BOB)), "done"]),
        tools=[pay],
        permissions=StandardPermissions(ask=["pay"]),
    )
    first = await agent.run("go")
    assert first.pending is not None and first.pending.call is not None
    first.pending.call["args"]["amount"] = 9000  # the caller's own copy
    record = await agent.deps.runtime.load_run(first.run_id)
    assert record is not None and record.result is not None
    journaled = record.result["pending"]["call"]["args"]
    assert journaled == BOB, f"the journaled request now reads {journaled}"
    done = await agent.resume(first.run_id, approve=True)
    assert done.status == "completed"
    assert ledger == [("pay", BOB)], "the approved call did not run"


async def test_a_record_read_from_memory_hands_out_a_copy_of_its_result() -> None:
    runtime = InMemoryRuntime()
    await runtime.start_run(RunRecord("r1", "g", "h", None, None))
    given = {"output": "x", "pending": {"node": "n", "call": {"id": "a", "args": dict(BOB)}}}
    await runtime.finish_run("r1", RunStatus.AWAITING_APPROVAL, "", given)
    given["pending"]["call"]["args"]["amount"] = 2  # the caller's dict, changed after
    read = await runtime.load_run("r1")
    assert read is not None and read.result is not None
    assert read.result["pending"]["call"]["args"] == BOB
    read.result["pending"]["call"]["args"]["amount"] = 3  # a reader's copy, changed
    again = await runtime.load_run("r1")
    assert again is not None and again.result is not None
    assert again.result["pending"]["call"]["args"] == BOB
    assert again.status == RunStatus.AWAITING_APPROVAL


async def test_records_listed_from_memory_are_copies_too() -> None:
    """`runs()` (what `agent.runs()`, the CLI and the server list) handed out the stored
    records: a caller marking a waiting run `completed` in her list changed the journal."""
    runtime = InMemoryRuntime()
    await runtime.start_run(RunRecord("r1", "g", "h", None, None))
    await runtime.start_run(RunRecord("r2", "g", "h", None, None))
    given = {"output": "x", "pending": {"node": "n", "call": {"id": "a", "args": dict(BOB)}}}
    await runtime.finish_run("r1", RunStatus.AWAITING_APPROVAL, "", given)
    for record in await runtime.runs():
        record.status = RunStatus.COMPLETED
        if record.result is not None:
            record.result["pending"]["call"]["args"]["amount"] = 3
    first, second = await runtime.load_run("r1"), await runtime.load_run("r2")
    assert first is not None and second is not None and first.result is not None
    assert (first.status, second.status) == (RunStatus.AWAITING_APPROVAL, RunStatus.RUNNING)
    assert first.result["pending"]["call"]["args"] == BOB
    listed = {r.run_id: r.status for r in await runtime.runs()}
    assert listed == {"r1": RunStatus.AWAITING_APPROVAL, "r2": RunStatus.RUNNING}


# -------------------------------------------- 6. the viewer's "unchanged edit" check


async def _viewer_approves_flag_on_1(tmp_path: Path, args_text: str) -> list[Any]:
    """Serve a run asking about `flag(on=1)`, approve it in the viewer with `args_text` in
    the card's text box, and return the approval answers journaled."""
    from test_serve_api import served

    @tool(destructive=True)
    def flag(on: int | bool) -> str:
        """Set a flag."""
        ledger.append(("flag", {"on": on}))
        return f"set {on!r}"

    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent(
        "x",
        model=ScriptedModel([turn(("c", "flag", {"on": 1})), "done"]),
        tools=[flag],
        runtime=runtime,
    )
    async with served(tmp_path, agent=agent) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "go"})).json()["run_id"]
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        done = await s.client.post(
            f"/ui/runs/{run_id}/approvals/c",
            data={"allow": "true", "args": args_text, "key": pending["key"]},
            headers={"HX-Request": "true"},
        )
        assert done.headers.get("hx-refresh") == "true", done.text
        assert (await s.settled(run_id))["status"] == "completed"
        effects = await runtime.effects(run_id)
    return [e.outcome["answer"] for e in effects if e.kind == "approval" and e.outcome]


async def test_the_viewer_takes_true_for_1_as_an_edit(tmp_path: Path) -> None:
    await _viewer_approves_flag_on_1(tmp_path, '{"on": true}')
    [(_, ran)] = ledger
    assert ran["on"] is True, "the edit to `true` was taken as unchanged (1 == True)"


async def test_the_viewer_sends_back_unchanged_arguments_as_a_plain_approval(
    tmp_path: Path,
) -> None:
    """The card's text box holds the call's arguments; approved as they are, the answer
    journaled is a plain `true`, not an edit (which the rules would meet again)."""
    answers = await _viewer_approves_flag_on_1(tmp_path, '{"on":  1}')
    assert answers == [True], answers
    assert ledger == [("flag", {"on": 1})]


def test_an_approval_is_bound_to_its_arguments_as_json_not_as_python_compares_them() -> None:
    """The request or answer journaled for `pay(confirm=1)` is not one for
    `pay(confirm=true)` (Python's `True == 1`); nor `1` for `1.0`, which a rule's text
    pattern reads differently."""
    from loomgraph.engine.approval_checks import same_call

    asked = {"id": "a", "tool": "pay", "args": {"confirm": 1, "amount": 1}}
    assert same_call(asked, {"id": "a", "tool": "pay", "args": {"confirm": 1, "amount": 1}})
    assert not same_call(asked, {"id": "a", "tool": "pay", "args": {"confirm": True, "amount": 1}})
    assert not same_call(asked, {"id": "a", "tool": "pay", "args": {"confirm": 1, "amount": 1.0}})

"""An approval settles exactly one tool call: the one its request was journaled for (same run,
node path, visit and call slot, same call id, tool and arguments), once — and only answers
that say yes or no plainly are taken as one.

Call ids come from the model and are not unique: two calls of one run may share one (in one
turn it is refused as an unusable tool call: the provider's next request would repeat it); an
answer supplied with a resume is used up whether it is used, refused or expired; an approval
handler's odd return value denies (fail closed); an answer that cannot be journaled is refused
before anything is written; edited arguments meet the same size limit as the model's.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from loomgraph import Agent, Approval, tool
from loomgraph.agent.checkpoints import ApprovalNotPending, ApprovalRefused, ResumeError
from loomgraph.engine import approvals
from loomgraph.engine.effects import BoundApproval
from loomgraph.governance import StandardPermissions
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Decision, SizeLimits, ToolCall
from loomgraph.runtime import InMemoryRuntime, SqliteRuntime

# Every tool execution, with the arguments it ran with: the side effects that happened.
ledger: list[tuple[str, dict[str, Any]]] = []

BOB = {"to": "bob", "amount": 1}
MALLORY = {"to": "mallory", "amount": 100000}


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    ledger.append(("pay", {"to": to, "amount": amount}))
    return f"paid {amount} to {to}"


@tool(destructive=True)
def wipe(target: str) -> str:
    """Wipe a target."""
    ledger.append(("wipe", {"target": target}))
    return f"wiped {target}"


def turn(*calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A model turn of tool calls given as (id, tool, args)."""
    return {"tool_calls": [{"id": i, "tool": t, "args": a} for i, t, a in calls]}


def agent_for(script: list[Any], **options: Any) -> Agent:
    options.setdefault("permissions", StandardPermissions(ask=["pay", "wipe"]))
    return Agent("x", model=ScriptedModel(script), tools=[pay, wipe], **options)


async def tool_messages(agent: Agent, run_id: str) -> list[dict[str, Any]]:
    history = await agent.history(run_id)
    return [m for m in history[-1].state["messages"] if m.get("role") == "tool"]


async def journal_of(agent: Agent, run_id: str) -> tuple[Any, ...]:
    """What the journal holds of a run: status, pending request, transitions, effects."""
    runtime = agent.deps.runtime
    record = await runtime.load_run(run_id)
    assert record is not None
    effects = [(e.key, e.status, e.outcome) for e in await runtime.effects(run_id)]
    transitions = [(t.seq, t.node, t.visit) for t in await runtime.transitions(run_id)]
    return record.status, (record.result or {}).get("pending"), transitions, effects


# ------------------------------------------------------------- 1. one approval, one call


async def test_two_calls_sharing_an_id_are_each_asked_and_answered(tmp_path: Path) -> None:
    ledger.clear()
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    script = [turn(("X", "pay", BOB)), turn(("X", "pay", MALLORY)), "done"]
    agent = agent_for(script, runtime=runtime)
    try:
        first = await agent.run("go")
        assert first.status == "awaiting_approval" and first.pending is not None
        assert first.pending.call is not None and first.pending.call["args"] == BOB
        second = await agent.resume(first.run_id, approve=True)
        assert ledger == [("pay", BOB)]
        # The approval of the small payment does not release the big one: it is asked too.
        assert second.status == "awaiting_approval" and second.pending is not None
        assert second.pending.call is not None and second.pending.call["args"] == MALLORY
        assert second.pending.key != first.pending.key
        # An answer naming the first request never lands on the second (same call id).
        stale = BoundApproval("X", True, key=first.pending.key)
        with pytest.raises(ApprovalNotPending):
            await agent.resume(first.run_id, approve=stale)
        assert ledger == [("pay", BOB)]
        done = await agent.resume(first.run_id, approve=False)  # and can be denied
        assert done.status == "completed" and ledger == [("pay", BOB)]
        results = [m["content"] for m in await tool_messages(agent, first.run_id)]
        assert results[0] == "paid 1 to bob" and "denied" in results[1]
    finally:
        await agent.aclose()


async def test_a_handler_answers_each_call_sharing_an_id_on_its_own() -> None:
    ledger.clear()
    asked: list[tuple[str, dict[str, Any]]] = []

    def handler(call: dict[str, Any], decision: Decision) -> bool:
        asked.append((call["tool"], call["args"]))
        return call["tool"] == "pay" and call["args"]["amount"] <= 10

    script = [
        turn(("X", "pay", BOB)),
        turn(("X", "pay", MALLORY)),
        turn(("X", "wipe", {"target": "prod"})),
        "done",
    ]
    result = await agent_for(script, approval_handler=handler).run("go")
    assert result.status == "completed"
    assert Counter(map(repr, asked)) == Counter(
        map(repr, [("pay", BOB), ("pay", MALLORY), ("wipe", {"target": "prod"})])
    )
    assert ledger == [("pay", BOB)]  # neither the big payment nor the wipe ran


CALL = st.tuples(st.sampled_from(["X", "Y"]), st.sampled_from(["pay", "wipe"]), st.integers(0, 2))
# Turns of calls whose ids repeat across turns, never within one (a turn repeating an id is
# refused before any of its calls is asked about: test_model_stream_findings).
TURNS = st.lists(
    st.lists(CALL, min_size=1, max_size=2, unique_by=lambda c: c[0]), min_size=1, max_size=3
)


def args_of(name: str, n: int, edited: bool = False) -> dict[str, Any]:
    if name == "pay":
        return {"to": "edited" if edited else f"p{n}", "amount": n + (100 if edited else 0)}
    return {"target": f"edited{n}" if edited else f"t{n}"}


def number_of(name: str, args: dict[str, Any]) -> int:
    """The n a call's arguments were made from (`args_of`)."""
    if name == "pay":
        return int(args["amount"]) % 100
    return int(re.sub(r"\D", "", args["target"]))


def script_of(turns: list[list[tuple[str, str, int]]]) -> list[Any]:
    return [turn(*((i, t, args_of(t, n)) for i, t, n in calls)) for calls in turns] + ["done"]


class GatedRuntime(InMemoryRuntime):
    """An in-memory journal whose next lease acquisition waits at a gate: it holds one resume
    between its first check of the answer and taking the run's lease, deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float | None = None, *, take_from: str | None = None
    ) -> Any:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            await gate.wait()
        return await super().acquire_lease(run_id, owner, ttl, take_from=take_from)


async def answered_twice(agent: Agent, runtime: GatedRuntime, run_id: str, approve: Any) -> Any:
    """The same answer given by two concurrent resumes: the first checked, then held before
    the lease while the second goes on. The second's result; the first must be refused."""
    gate = runtime.gate = asyncio.Event()
    runtime.entered = asyncio.Event()
    late = asyncio.create_task(agent.resume(run_id, approve=approve))
    await asyncio.wait_for(runtime.entered.wait(), 30)
    result = await agent.resume(run_id, approve=approve)
    gate.set()
    with pytest.raises(ApprovalRefused):
        await asyncio.wait_for(late, 30)
    return result


@settings(max_examples=60, deadline=None)
@given(TURNS, st.data())
def test_every_call_runs_only_on_its_own_answer_given_on_resume(
    turns: list[list[tuple[str, str, int]]], data: st.DataObject
) -> None:
    """Whatever ids the model gives (shared across turns), each call is asked on its own, and
    runs exactly when its own answer said yes, with the arguments it said. A yes given twice
    at once (`True`, or a keyless `Approval` of the call id) is used once: the slower resume
    is refused, never used for the run's next call (which may share the id)."""

    async def body() -> None:
        ledger.clear()
        runtime = GatedRuntime()
        agent = agent_for(script_of(turns), runtime=runtime)
        expected: list[tuple[str, dict[str, Any]]] = []
        result = await agent.run("go")
        asks = 0
        while result.status == "awaiting_approval":
            asks += 1
            assert asks <= sum(map(len, turns)), "asked more often than there are calls"
            assert result.pending is not None and result.pending.call is not None
            call = result.pending.call
            answers = ["yes", "no", "edit", "yes twice", "keyless yes twice"]
            answer = data.draw(st.sampled_from(answers), label=f"answer {asks}")
            approve: Any = answer != "no"
            if answer == "edit":
                n = number_of(call["tool"], call["args"])
                approve = {"args": args_of(call["tool"], n, edited=True)}
                expected.append((call["tool"], approve["args"]))
            elif answer != "no":
                expected.append((call["tool"], call["args"]))
            if answer.endswith("twice"):
                keyless = Approval(call["id"], True)
                approve = keyless if answer.startswith("keyless") else True
                result = await answered_twice(agent, runtime, result.run_id, approve)
                continue
            result = await agent.resume(result.run_id, approve=approve)
        assert result.status == "completed"
        assert asks == sum(map(len, turns))  # every call asked, each on its own
        assert Counter(map(repr, ledger)) == Counter(map(repr, expected))

    asyncio.run(body())


@settings(max_examples=60, deadline=None)
@given(
    TURNS,
    st.fixed_dictionaries(
        {(t, n): st.sampled_from(["yes", "no", "edit"]) for t in ("pay", "wipe") for n in range(3)}
    ),
    st.booleans(),
)
def test_every_call_runs_only_on_the_handlers_answer_for_it(
    turns: list[list[tuple[str, str, int]]], table: dict[tuple[str, int], str], meddles: bool
) -> None:
    """The same through an approval handler: asked once per call, never answered for another.
    A handler that changes the call it is shown in place (`meddles`) changes nothing: only
    the arguments it returns as an edit count."""

    async def body() -> None:
        ledger.clear()
        asked: list[str] = []

        def handler(call: dict[str, Any], decision: Decision) -> Any:
            asked.append(call["id"])
            n = number_of(call["tool"], call["args"])
            answer = table[(call["tool"], n)]
            if meddles:  # its copy: neither what runs nor what is journaled
                call["args"].clear()
                call["args"].update(args_of(call["tool"], n, edited=True))
            if answer == "edit":
                return {"args": args_of(call["tool"], n, edited=True)}
            return answer == "yes"

        result = await agent_for(script_of(turns), approval_handler=handler).run("go")
        assert result.status == "completed"
        expected = [
            (t, args_of(t, n, edited=table[(t, n)] == "edit"))
            for calls in turns
            for _, t, n in calls
            if table[(t, n)] != "no"
        ]
        assert len(asked) == sum(map(len, turns))
        assert Counter(map(repr, ledger)) == Counter(map(repr, expected))

    asyncio.run(body())


# The arguments the `direct` node pays with: a function node need not make the same call
# when its run is resumed (it may read a clock, a file, a service).
direct_args: dict[str, Any] = dict(BOB)


async def direct(state: Any, ctx: NodeContext) -> dict[str, Any]:
    """A function node that calls `pay` itself, with whatever `direct_args` say now."""
    await ctx.call_tool(ToolCall(id="D1", tool="pay", args=dict(direct_args)))
    return {}


async def test_an_approval_is_for_the_arguments_it_was_asked_about() -> None:
    """The call made at the approved request's key on resume has other arguments: the
    approval of the request does not release it."""
    ledger.clear()
    direct_args.clear()
    direct_args.update(BOB)
    graph = Graph(
        name="direct-pay",
        entry="direct",
        nodes={"direct": NodeSpec(kind="function", call=f"{__name__}:direct")},
        edges=[EdgeSpec(source="direct", target="END")],
    )
    agent = agent_for([], architecture=graph)
    first = await agent.run("go")
    assert first.status == "awaiting_approval" and first.pending is not None
    assert first.pending.call is not None and first.pending.call["args"] == BOB
    direct_args.update(MALLORY)
    done = await agent.resume(first.run_id, approve=True)
    assert done.status == "completed" and ledger == []


# ---------------------------------------------------- 2. a supplied answer is used up


async def test_an_approval_given_in_time_stands_and_is_not_kept_for_a_later_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """resume() finds the request in time and journals the answer as it takes the run up;
    the engine reaches the call after the deadline: the answer given in time stands, for
    that request only, not for the next call with the same id. (Before answers were
    journaled as a resume takes them up, the engine's later check spent it as expired.)"""
    ledger.clear()
    agent = agent_for(
        [turn(("X", "pay", BOB)), turn(("X", "pay", MALLORY)), "done"],
        permissions=StandardPermissions(ask=["pay"], approval_timeout_s=60),
    )
    first = await agent.run("go")
    assert first.status == "awaiting_approval"
    real = time.time

    class Later:  # the engine's clock, two minutes on: the request has expired
        @staticmethod
        def time() -> float:
            return real() + 120

    monkeypatch.setattr(approvals, "time", Later)
    second = await agent.resume(first.run_id, approve=True)
    assert ledger == [("pay", BOB)]
    assert second.status == "awaiting_approval" and second.pending is not None
    assert second.pending.call is not None and second.pending.call["args"] == MALLORY
    [paid] = await tool_messages(agent, first.run_id)
    assert "approval timed out" not in paid["content"]
    # The engine's clock runs two minutes ahead of this resume's: the next request was asked
    # "after" any answer given now without naming it; one naming its request is its own.
    denied = BoundApproval("X", False, key=second.pending.key)
    done = await agent.resume(first.run_id, approve=denied)
    assert done.status == "completed" and ledger == [("pay", BOB)]


# ------------------------------------------ 3. the handler's answer: plain yes/no or deny


def approved_args(value: Any) -> dict[str, Any] | None:
    """The arguments a handler's return value approves the call `C1` (args BOB) with, by the
    documented rule — True, {"args": dict}, an Approval of C1 with allow True — else None."""

    def plain(args: Any) -> bool:
        return isinstance(args, dict) and _encodes(args) and json.loads(json.dumps(args)) == args

    if value is True:
        return BOB
    if isinstance(value, dict) and set(value) == {"args"} and plain(value["args"]):
        return dict(value["args"])
    if isinstance(value, Approval) and value.call_id == "C1" and value.allow is True:
        if value.args is None:
            return BOB
        return dict(value.args) if plain(value.args) else None
    return None


def _encodes(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def runs_with(args: dict[str, Any] | None) -> bool:
    """Whether `pay` accepts these arguments at all (else it rejects them, and nothing runs):
    as its validation reads them, a model's or an edit's alike (`False` is an amount of 0)."""
    if args is None:
        return False
    try:
        pay.bind(args, "key")
    except ValidationError:
        return False
    return True


ODD = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["args", "allow", "to", "amount"]), inner, max_size=3)
    ),
    max_leaves=6,
)
ARGS = st.one_of(st.none(), ODD, st.just({"to": "carol", "amount": 2}))
HANDLER_VALUES = st.one_of(
    ODD,
    st.builds(lambda a: {"args": a}, ARGS),
    st.builds(lambda a, b: {"args": a, "allow": b}, ARGS, st.booleans()),
    st.builds(
        Approval,
        call_id=st.sampled_from(["C1", "other"]),
        allow=st.one_of(st.booleans(), ODD),
        args=ARGS,
    ),
    st.builds(
        Decision,
        st.sampled_from(["allow", "deny", "ask"]),
        st.text(max_size=4),
        st.text(max_size=4),
    ),
    st.sampled_from(["yes", "no", "false", "deny", "", [False], [True], 0, 1, 0.0, object()]),
)


@settings(max_examples=150, deadline=None)
@given(HANDLER_VALUES)
def test_a_handler_approves_only_by_a_plain_yes(value: Any) -> None:
    async def body() -> None:
        ledger.clear()
        agent = agent_for([turn(("C1", "pay", BOB)), "done"], approval_handler=lambda c, d: value)
        result = await agent.run("go")
        if value is None:
            assert result.status == "awaiting_approval" and ledger == []
            return
        assert result.status == "completed", result.reason  # never a KeyError/ValueError
        args = approved_args(value)
        assert ledger == ([("pay", args)] if runs_with(args) else [])
        [message] = await tool_messages(agent, result.run_id)
        refused = value is not False and not (
            isinstance(value, Approval)
            and value.call_id == "C1"
            and value.allow is False
            and (value.args is None or (isinstance(value.args, dict) and _encodes(value.args)))
        )
        if args is None and refused:  # fail closed, naming what was returned
            assert "approval handler" in message["content"], message["content"]

    asyncio.run(body())


@pytest.mark.parametrize(
    ("returned", "named"),
    [
        ("no", "a value (str)"),  # named by type and shape: an answer may carry the arguments
        ([False], "a value of 1 item(s) (list)"),
        ({"allow": False}, "(dict)"),
        ({"args": "mallory"}, "Approval.args"),
        ({"args": BOB, "allow": False}, "(dict)"),
        (Decision("deny", "x", "no"), "(Decision)"),
        (Approval("some-other-call", True), "an Approval of call 'some-other-call'"),
        (Approval("C1", "no"), "Approval.allow"),  # type: ignore[arg-type]
        # (Refused as a model's NaN argument is: no journal could keep it.)
        ({"args": {"to": "bob", "amount": float("nan")}}, "$.amount: nan is no JSON number"),
    ],
)
async def test_an_odd_handler_answer_denies_naming_it(returned: Any, named: str) -> None:
    ledger.clear()
    agent = agent_for([turn(("C1", "pay", BOB)), "done"], approval_handler=lambda c, d: returned)
    result = await agent.run("go")
    assert result.status == "completed" and ledger == []
    [message] = await tool_messages(agent, result.run_id)
    assert message["is_error"] and "approval handler" in message["content"]
    assert named in message["content"]


# ----------------------------------------------- 4. and 5. a resume's answer is checked


NOT_BOOL = st.one_of(
    st.text(max_size=6), st.integers(), st.floats(), st.none(), st.lists(st.booleans())
)
# What the journal cannot keep, or would give back changed (a tuple, an int key).
NOT_JSON = st.sampled_from(
    [object(), {"bob"}, b"bob", float("nan"), float("inf"), (1, 2), {1: "a"}]
)


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(
        st.builds(lambda v: ("allow", Approval("C1", v)), NOT_BOOL),
        st.builds(lambda v: ("args", Approval("C1", True, {"to": v, "amount": 1})), NOT_JSON),
        st.builds(
            lambda v: ("args", Approval("C1", True, {"to": [{"x": v}], "amount": 1})), NOT_JSON
        ),
        st.builds(lambda v: ("args", {"args": {"to": "bob", "amount": v}}), NOT_JSON),
        st.builds(lambda v: ("args", Approval("C1", True, v)), st.text() | st.lists(st.integers())),
        st.builds(
            lambda v: ("approver", Approval("C1", True, approver=v)), st.integers() | st.none()
        ),
    )
)
def test_an_unusable_answer_is_refused_before_anything_is_journaled(
    case: tuple[str, Any],
) -> None:
    field, answer = case

    async def body() -> None:
        ledger.clear()
        agent = agent_for([turn(("C1", "pay", BOB)), "done"])
        first = await agent.run("go")
        before = await journal_of(agent, first.run_id)
        with pytest.raises(ResumeError, match=field):
            await agent.resume(first.run_id, approve=answer)
        assert await journal_of(agent, first.run_id) == before and ledger == []
        done = await agent.resume(first.run_id, approve=True)  # the run still waits
        assert done.status == "completed" and ledger == [("pay", BOB)]

    asyncio.run(body())


async def test_an_edit_over_the_size_limit_is_refused_like_the_models_call() -> None:
    ledger.clear()
    agent = agent_for(
        [turn(("C1", "pay", BOB)), turn(("C2", "pay", {"to": "b" * 300, "amount": 1})), "done"],
        size_limits=SizeLimits(tool_args_chars=200),
    )
    first = await agent.run("go")
    before = await journal_of(agent, first.run_id)
    huge = {"to": "b" * 300, "amount": 1}
    refused = await agent.resume(first.run_id, approve=Approval("C1", True, huge))
    assert ledger == []
    # The run still waits for this call, its journal as it was: the answer was not used.
    assert refused.status == "awaiting_approval" and refused.pending == first.pending
    assert await journal_of(agent, first.run_id) == before
    done = await agent.resume(first.run_id, approve=True)
    assert done.status == "completed" and ledger == [("pay", BOB)]
    # The same error, and limit, as when the model itself sends such arguments.
    over_limit = (await tool_messages(agent, first.run_id))[1]["content"]
    assert over_limit in refused.reason


async def test_a_handlers_edit_over_the_size_limit_denies_and_is_not_journaled() -> None:
    ledger.clear()
    huge = {"to": "b" * 300, "amount": 1}
    agent = agent_for(
        [turn(("C1", "pay", BOB)), "done"],
        size_limits=SizeLimits(tool_args_chars=200),
        approval_handler=lambda c, d: {"args": huge},
    )
    result = await agent.run("go")
    assert result.status == "completed" and ledger == []
    [message] = await tool_messages(agent, result.run_id)
    assert "at most 200 are accepted" in message["content"]
    effects = await agent.deps.runtime.effects(result.run_id)
    assert "b" * 300 not in json.dumps([(e.intent, e.outcome) for e in effects])


def nested(depth: int) -> dict[str, Any]:
    """Arguments whose `memo` is `depth` objects deep (the arguments object is one more)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return {**BOB, "memo": value}


# Just over the model's limit; deep enough to exhaust the stack of a recursive copy; and
# deep enough to exhaust the JSON encoder's.
@pytest.mark.parametrize("depth", [32, 900, 100_000])
async def test_a_deeply_nested_edit_is_refused_like_the_models_call(depth: int) -> None:
    """Edited arguments meet the nesting limit a model's arguments meet (32 levels): a deeper
    edit is a `ResumeError` naming the limit, before anything is journaled; never a
    `RecursionError` from whatever walks the value first."""
    ledger.clear()
    agent = agent_for([turn(("C1", "pay", BOB)), "done"])
    first = await agent.run("go")
    before = await journal_of(agent, first.run_id)
    with pytest.raises(ResumeError, match="nested deeper than the limit of 32") as refused:
        await agent.resume(first.run_id, approve=Approval("C1", True, nested(depth)))
    assert "Approval.args" in str(refused.value) and "still waits" in str(refused.value)
    assert await journal_of(agent, first.run_id) == before and ledger == []
    done = await agent.resume(first.run_id, approve=True)
    assert done.status == "completed" and ledger == [("pay", BOB)]


async def test_an_edit_at_the_nesting_limit_is_taken() -> None:
    """The limit is the model's: arguments 31 objects deep (and the arguments object) pass."""
    taken: list[dict[str, Any]] = []

    @tool
    def note(to: str, amount: int, memo: dict[str, Any]) -> str:
        """Note a payment."""
        taken.append(memo)
        return "noted"

    agent = Agent(
        "x",
        model=ScriptedModel([turn(("C1", "note", BOB | {"memo": {}})), "done"]),
        tools=[note],
        permissions=StandardPermissions(ask=["note"]),
    )
    first = await agent.run("go")
    done = await agent.resume(first.run_id, approve=Approval("C1", True, nested(31)))
    assert done.status == "completed", done.reason
    assert taken == [nested(31)["memo"]]


async def test_a_handlers_deeply_nested_edit_denies_naming_the_limit() -> None:
    ledger.clear()
    agent = agent_for(
        [turn(("C1", "pay", BOB)), "done"], approval_handler=lambda c, d: {"args": nested(900)}
    )
    result = await agent.run("go")
    assert result.status == "completed" and ledger == []
    [message] = await tool_messages(agent, result.run_id)
    assert "approval handler" in message["content"]
    assert "nested deeper than the limit of 32" in message["content"]


# ------------------------------------------------------------ journals written before


async def test_a_run_waiting_in_an_older_journal_is_still_answered(tmp_path: Path) -> None:
    """Journals written before approvals were bound to the call's slot keep its request and
    answer under `…:approval:CALL_ID`: such a waiting run is answered as before."""
    ledger.clear()
    path = tmp_path / "journal.db"
    agent = agent_for([turn(("C1", "pay", BOB)), "done"], runtime=SqliteRuntime(str(path)))
    first = await agent.run("go")
    await agent.aclose()
    old = re.compile(r"^(.*):\d+:(approval(?:-request)?:C1)$")
    with sqlite3.connect(path) as db:  # rewrite the keys as an older version wrote them
        for n, key in db.execute("SELECT n, key FROM effects").fetchall():
            if old.match(key):
                db.execute("UPDATE effects SET key = ? WHERE n = ?", (old.sub(r"\1:\2", key), n))
        (result,) = db.execute("SELECT result FROM runs").fetchone()
        data = json.loads(result)
        data["pending"]["key"] = old.sub(r"\1:\2", data["pending"]["key"])
        db.execute("UPDATE runs SET result = ?", (json.dumps(data),))
    agent = agent_for([turn(("C1", "pay", BOB)), "done"], runtime=SqliteRuntime(str(path)))
    try:
        done = await agent.resume(first.run_id, approve=True)
        assert done.status == "completed" and ledger == [("pay", BOB)]
        keys = [e.key for e in await agent.deps.runtime.effects(first.run_id)]
        assert f"{first.run_id}:tools:1:approval:C1" in keys  # answered under the old key
        assert f"{first.run_id}:tools:1:1:approval:C1" not in keys
    finally:
        await agent.aclose()

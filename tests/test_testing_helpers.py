"""`loomgraph.testing.run_node` runs one step as a real run does: the node's retry and timeout
policies, a patch that fails its checks retried, an interrupt answered with a value checked as
a resume checks it, the edge the run would take next, and the state checked as a run's is."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import ConditionError, StateError
from loomgraph.graph.spec import Graph
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus, RunStopped
from loomgraph.protocols.events import NODE_RETRY
from loomgraph.testing import run_node

CALLS: dict[str, int] = {}


def flaky(state: dict[str, Any]) -> dict[str, Any]:
    """Fails with a transient error on its first call, then works."""
    CALLS["flaky"] = CALLS.get("flaky", 0) + 1
    if CALLS["flaky"] == 1:
        raise ConnectionError("transient")
    return {"count": CALLS["flaky"]}


def sloppy(state: dict[str, Any]) -> dict[str, Any]:
    """Returns a patch of the wrong type on its first call, then a right one."""
    CALLS["sloppy"] = CALLS.get("sloppy", 0) + 1
    return {"count": "one"} if CALLS["sloppy"] == 1 else {"count": 1}


async def stuck(state: dict[str, Any]) -> dict[str, Any]:
    """Never returns by itself."""
    await asyncio.Event().wait()  # never set: runs until it is stopped
    return {"count": 0}


def graph(nodes: str, edges: str = "") -> Graph:
    return graph_from_yaml(
        "name: t\nstate:\n  count: {type: int, default: 0}\n"
        f"entry: {nodes.split(':', 1)[0].strip()}\nnodes:\n{nodes}edges:\n{edges or '  []'}\n"
    )


FN = "kind: function, reads: [], writes: [count]"
HERE = __name__  # as pytest imported it: the nodes call these functions, not a copy


@cache
def policies() -> Graph:
    """Function nodes with policies, built when first used (they import this module)."""
    return graph(
        f"  flaky: {{{FN}, call: '{HERE}:flaky',"
        " retry: {attempts: 3, errors: [ConnectionError]}}\n"
        f"  sloppy: {{{FN}, call: '{HERE}:sloppy',"
        " retry: {attempts: 2, errors: [StateError]}}\n"
        f"  plain_sloppy: {{{FN}, call: '{HERE}:sloppy'}}\n"
        f"  stuck: {{{FN}, call: '{HERE}:stuck', timeout: 0.05}}\n",
        "  - {from: flaky, to: sloppy}\n  - {from: sloppy, to: plain_sloppy}\n"
        "  - {from: plain_sloppy, to: stuck}\n",
    )


ASK = graph(
    "  ask: {kind: interrupt, request: int, output: count, message: 'How many for {{ input }}?'}\n"
    "  many: {kind: interrupt, request: int, output: count}\n",
    "  - {from: ask, to: many, when: '(10 / count) > 1 and visits.many < 2'}\n"
    "  - {from: ask, to: END}\n"
    "  - {from: many, to: END}\n",
)


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


# ------------------------------------------------------------------ policies


async def test_run_node_retries_a_failing_node_as_its_retry_policy_says() -> None:
    run = await run_node(policies(), "flaky", {})
    assert run.patch == {"count": 2}
    assert CALLS["flaky"] == 2
    assert run.kinds() == [NODE_RETRY]
    assert run.events[0].payload["error"] == "ConnectionError: transient"


async def test_run_node_retries_a_patch_that_fails_its_checks() -> None:
    run = await run_node(policies(), "sloppy", {})
    assert run.patch == {"count": 1} and run.state["count"] == 1
    assert "StateError" in run.events[0].payload["error"]
    CALLS.clear()
    with pytest.raises(StateError, match="node 'plain_sloppy' wrote state field 'count'"):
        await run_node(policies(), "plain_sloppy", {})  # no retry: the first patch fails


async def test_run_node_stops_a_node_at_its_timeout() -> None:
    with pytest.raises(TimeoutError, match=r"took longer than its timeout of 0\.05 s"):
        await run_node(policies(), "stuck", {})


async def test_run_node_agrees_with_a_real_run_of_the_same_nodes() -> None:
    agent = Agent("x", model="echo", architecture=policies())
    result = await agent.run("go")  # flaky and sloppy retried, stuck stopped at its timeout
    assert result.status == RunStatus.FAILED
    assert "'stuck' took longer than its timeout of 0.05 s" in result.reason
    patches = {c.node: c.patch for c in await agent.history(result.run_id) if c.node}
    CALLS.clear()
    for node in ("flaky", "sloppy"):
        assert (await run_node(policies(), node, {})).patch == patches[node]


# ------------------------------------------------------------------ interrupts


async def test_run_node_without_a_value_stops_with_the_request() -> None:
    with pytest.raises(RunStopped) as stopped:
        await run_node(ASK, "ask", {"input": "apples"})
    assert stopped.value.status == RunStatus.INTERRUPTED
    assert stopped.value.pending is not None
    assert stopped.value.pending.message == "How many for apples?"
    assert stopped.value.pending.type == "int"


async def test_run_node_with_a_value_answers_the_interrupt() -> None:
    run = await run_node(ASK, "ask", {"input": "apples"}, value=3)
    assert run.patch == {"count": 3}
    assert run.state["count"] == 3
    assert run.next == "many"


async def test_a_value_is_checked_as_a_resume_checks_it() -> None:
    refused = r"waits at 'ask' for a value of type int; the value does not fit"
    with pytest.raises(ResumeError, match=refused):
        await run_node(ASK, "ask", {}, value="many")
    # Strictly, as a resume checks it: the text "4" is no int.
    with pytest.raises(ResumeError, match=refused):
        await run_node(ASK, "ask", {}, value="4")
    assert (await run_node(ASK, "ask", {}, value=4)).patch == {"count": 4}


async def test_a_value_for_a_node_that_does_not_wait_is_refused() -> None:
    with pytest.raises(ResumeError, match="node 'flaky' did not wait for a value"):
        await run_node(policies(), "flaky", {}, value=3)


# ------------------------------------------------------------------ edges


async def test_next_is_the_node_the_edges_lead_to() -> None:
    assert (await run_node(ASK, "ask", {}, value=20)).next == "END"
    # `visits` counts the other nodes' visits for the conditions that read them.
    assert (await run_node(ASK, "ask", {}, value=3, visits={"many": 2})).next == "END"
    calc = [{"tool_calls": [{"tool": "add", "args": {"a": 2, "b": 2}}]}]
    question = {"messages": [{"role": "user", "content": "2+2?"}]}
    assert (await run_node("react", "model", question, model=calc)).next == "tools"
    assert (await run_node("react", "model", question, model=["4"])).next == "END"


async def test_a_condition_that_fails_fails_the_step() -> None:
    with pytest.raises(ConditionError, match="ZeroDivisionError"):
        await run_node(ASK, "ask", {}, value=0)


# ------------------------------------------------------------------ the state given


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"messages": "2+2?"}, "state field 'messages': Input should be a valid list"),
        ({"messages": [{"role": "usr", "content": "x"}]}, "'user', 'assistant' or 'tool'"),
        ({"input": 5}, "state field 'input': Input should be a valid string"),
        ({"mesages": []}, "unknown state field 'mesages'"),
    ],
)
async def test_the_state_given_is_checked_as_a_runs_state(
    state: dict[str, Any], problem: str
) -> None:
    asked: list[Any] = []

    def model(request: Any) -> str:
        asked.append(request)
        return "ok"

    with pytest.raises(StateError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        await run_node("react", "model", state, model=model)
    assert asked == []  # refused before the node ran


async def test_a_good_state_is_still_taken() -> None:
    run = await run_node(
        "react",
        "model",
        {"input": "hi", "messages": [{"role": "user", "content": "hi"}]},
        model=ScriptedModel(["hello"]),
    )
    assert run.state["messages"][-1] == {"role": "assistant", "content": "hello"}
    assert run.next == "END"

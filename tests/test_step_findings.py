"""One node visit: the journal keeps exactly the state the run goes on with, whatever fails
after the node's patch; every BaseException a node raises ends or routes the run; retry
bounds its waits and retries a refused patch."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.graph.policies import RetryPolicy
from loomgraph.protocols import RunStatus

FNS = __name__  # the function nodes share this module's globals
MAX_RETRY_WAIT = 3600.0  # graph.policies.MAX_RETRY_WAIT, the documented maximum
calls: list[str] = []
started = asyncio.Event()


class Boom(BaseException):
    """A BaseException that is not an Exception."""


RAISED: dict[str, BaseException] = {}


def write3(state: Mapping[str, Any]) -> dict[str, Any]:
    """A patch the run may or may not go on with."""
    return {"score": 3, "output": "ok"}


def write_bad_count(state: Mapping[str, Any]) -> dict[str, Any]:
    """An answer, then an `add` dict patch whose second key cannot be added: the reducer
    fails part-way."""
    return {"output": "ok", "counts": {"a": 1, "b": "x"}}


def write_then_fail(state: Mapping[str, Any]) -> dict[str, Any]:
    """Two fields: the first applies, the second's reducer raises."""
    return {"score": 3, "output": "ok", "total": "x"}


def write_first(state: Mapping[str, Any]) -> dict[str, Any]:
    """A plain first answer."""
    return {"output": "first"}


def write_nan(state: Mapping[str, Any]) -> dict[str, Any]:
    """A value the journal refuses (NaN in an `any` field)."""
    return {"output": math.nan, "score": 3}


def echo(state: Mapping[str, Any]) -> dict[str, Any]:
    """What the handler was given, as the answer."""
    return {"output": {name: state[name] for name in sorted(state)}}


def raise_it(state: Mapping[str, Any]) -> dict[str, Any]:
    """Raise the BaseException the test put in RAISED."""
    raise RAISED["error"]


def bad_then_good(state: Mapping[str, Any]) -> dict[str, Any]:
    """A patch its checks refuse, then a good one."""
    calls.append("f")
    return {"score": "not a number"} if len(calls) == 1 else {"score": 7}


async def wait_forever(state: Mapping[str, Any]) -> dict[str, Any]:
    """Never finishes by itself."""
    started.set()
    await asyncio.Event().wait()
    return {}


STATE = (
    "state:\n  score: {type: int, default: 0}\n  counts: {type: any, reducer: add, default: "
    "{a: 0, b: 0}}\n  total: {type: any, reducer: add, default: 0}\n"
)
HANDLER = (
    f"  h: {{kind: function, call: '{FNS}:echo', reads: [score, counts, total, error], "
    "writes: [output]}\n"
)


def graph(node: str, *, edges: str = "", on_error: bool = True) -> Any:
    """A graph of node `f` (and handler `h`), with `f`'s extra edges before its plain one."""
    route = ", on_error: h" if on_error else ""
    nodes = f"  f: {{{node}, writes: [score, counts, total, output]{route}}}\n"
    if on_error:
        nodes, edges = nodes + HANDLER, edges + "  - {from: h, to: END}\n"
    return graph_from_yaml(
        f"name: s\n{STATE}entry: f\nnodes:\n{nodes}edges:\n{edges}  - {{from: f, to: END}}\n"
    )


def agent_on(tmp_path: Path, architecture: Any) -> Agent:
    """An agent journaling to a SQLite file."""
    return Agent("x", model="echo", architecture=architecture, runtime=f"sqlite:{tmp_path}/j.db")


FAILS_AFTER_PATCH = {
    "condition": (
        f"kind: function, call: '{FNS}:write3'",
        "  - {from: f, to: END, when: 'score / 0 > 1'}\n",
    ),
    "reducer part-way": (f"kind: function, call: '{FNS}:write_bad_count'", ""),
    "second field": (f"kind: function, call: '{FNS}:write_then_fail'", ""),
}


@pytest.mark.parametrize("case", sorted(FAILS_AFTER_PATCH))
async def test_a_failure_after_the_patch_routes_from_the_state_the_journal_keeps(
    tmp_path: Path, case: str
) -> None:
    node, edges = FAILS_AFTER_PATCH[case]
    agent = agent_on(tmp_path, graph(node, edges=edges))
    result = await agent.run("go")
    assert result.status == "completed"
    history = await agent.history(result.run_id)
    assert [c.node for c in history] == ["", "f", "h"]
    seen = result.output  # the live state the handler ran on
    journaled = history[-2].state  # the journal's state before the handler
    assert seen == {name: journaled[name] for name in seen}
    assert seen["score"] == 0 and seen["counts"] == {"a": 0, "b": 0} and seen["total"] == 0
    assert history[1].patch == {"error": seen["error"]}  # the visit of `f`: only the failure
    assert history[-1].state["output"] == result.output


@pytest.mark.parametrize("case", sorted(FAILS_AFTER_PATCH))
async def test_a_failure_after_the_patch_fails_with_the_state_the_journal_keeps(
    tmp_path: Path, case: str
) -> None:
    node, edges = FAILS_AFTER_PATCH[case]
    agent = agent_on(tmp_path, graph(node, edges=edges, on_error=False))
    result = await agent.run("go")
    assert result.status == "failed"
    history = await agent.history(result.run_id)
    assert [c.node for c in history] == [""]
    assert history[-1].state["output"] is None
    assert result.output == ""  # the answer of a state without `output`, not the lost "ok"


async def test_a_visit_the_journal_refuses_leaves_the_state_as_journaled(tmp_path: Path) -> None:
    g = graph_from_yaml(
        f"name: n\n{STATE}entry: a\nnodes:\n"
        f"  a: {{kind: function, call: '{FNS}:write_first', writes: [output]}}\n"
        f"  b: {{kind: function, call: '{FNS}:write_nan', writes: [output, score]}}\n"
        "edges:\n  - {from: a, to: b}\n  - {from: b, to: END}\n"
    )
    agent = agent_on(tmp_path, g)
    result = await agent.run("go")
    assert result.status == "failed" and "cannot keep" in result.reason
    history = await agent.history(result.run_id)
    assert result.output == history[-1].state["output"] == "first"


BASE_ERRORS: dict[str, Callable[[], BaseException]] = {
    "custom": lambda: Boom("custom"),
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
    "GeneratorExit": lambda: GeneratorExit(),
    "CancelledError": lambda: asyncio.CancelledError("my own"),
}


async def run_catching(agent: Agent) -> Any:
    """The run's result; what it raised fails the test instead of stopping pytest."""
    try:
        return await agent.run("go")
    except BaseException as err:  # a KeyboardInterrupt must not end pytest
        pytest.fail(f"the run raised {type(err).__name__}: {err}")


@pytest.mark.parametrize("name", sorted(BASE_ERRORS))
async def test_a_base_exception_a_node_raises_is_routed_by_on_error(
    tmp_path: Path, name: str
) -> None:
    RAISED["error"] = BASE_ERRORS[name]()
    agent = agent_on(tmp_path, graph(f"kind: function, call: '{FNS}:raise_it'"))
    result = await run_catching(agent)
    assert result.status == "completed"
    assert result.output["error"]["type"] == type(RAISED["error"]).__name__
    (record,) = await agent.runs()
    assert record.status == RunStatus.COMPLETED


@pytest.mark.parametrize("name", sorted(BASE_ERRORS))
async def test_a_base_exception_a_node_raises_fails_the_run_journaled(
    tmp_path: Path, name: str
) -> None:
    RAISED["error"] = BASE_ERRORS[name]()
    agent = agent_on(tmp_path, graph(f"kind: function, call: '{FNS}:raise_it'", on_error=False))
    result = await run_catching(agent)
    assert result.status == "failed" and type(RAISED["error"]).__name__ in result.reason
    (record,) = await agent.runs()
    assert record.status == RunStatus.FAILED and record.reason == result.reason


async def test_cancelling_the_run_still_cancels_it(tmp_path: Path) -> None:
    started.clear()
    agent = agent_on(tmp_path, graph(f"kind: function, call: '{FNS}:wait_forever'"))
    task = asyncio.create_task(agent.run("go"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = await agent.runs()
    assert record.status == RunStatus.CANCELLED and record.reason == "cancelled by the caller"


@pytest.mark.parametrize("backoff", [math.inf, 1e300, 1e6, MAX_RETRY_WAIT + 1])
def test_a_retry_backoff_past_the_maximum_wait_is_refused(backoff: float) -> None:
    with pytest.raises(ValidationError, match=str(int(MAX_RETRY_WAIT))):
        RetryPolicy(backoff=backoff)
    with pytest.raises(GraphValidationError, match="backoff"):
        graph(f"kind: function, call: '{FNS}:write3', retry: {{backoff: {backoff}}}")


def test_no_retry_waits_longer_than_the_maximum() -> None:
    policy = RetryPolicy(attempts=20, backoff=MAX_RETRY_WAIT)
    assert [policy.delay(n) for n in (1, 2, 19)] == [MAX_RETRY_WAIT] * 3
    assert [RetryPolicy(backoff=0.5).delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("errors", ["[StateError]", "[Exception]"])
async def test_a_patch_its_checks_refuse_is_retried(tmp_path: Path, errors: str) -> None:
    calls.clear()
    node = f"kind: function, call: '{FNS}:bad_then_good', retry: {{attempts: 3, errors: {errors}}}"
    agent = agent_on(tmp_path, graph(node, on_error=False))
    events = [e async for e in agent.stream("go")]
    assert events[-1].payload["status"] == "completed" and calls == ["f", "f"]
    (retry,) = [e.payload for e in events if e.kind == "node_retry"]
    assert retry["error"].startswith("StateError: node 'f' wrote state field 'score'")
    (record,) = await agent.runs()
    history = await agent.history(record.run_id)
    assert history[-1].state["score"] == 7

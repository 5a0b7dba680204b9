"""Per-node policies from YAML: retry, timeout and an on_error route to a handler node."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Mapping
from typing import Any

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml

calls: list[str] = []
never = asyncio.Event()
module = types.ModuleType("lg_policy_fns")
sys.modules["lg_policy_fns"] = module


def flaky(state: Mapping[str, Any]) -> dict[str, Any]:
    """Fails twice with ConnectionError, then works."""
    calls.append("flaky")
    if calls.count("flaky") < 3:
        raise ConnectionError("down")
    return {"output": "up"}


def broken(state: Mapping[str, Any]) -> dict[str, Any]:
    """Always fails with ValueError."""
    calls.append("broken")
    raise ValueError("bad input")


async def stuck(state: Mapping[str, Any]) -> dict[str, Any]:
    """Never finishes by itself."""
    await never.wait()
    return {}


def handle(state: Mapping[str, Any]) -> dict[str, Any]:
    """Report the error it was routed."""
    return {"output": f"handled {state['error']['type']} from {state['error']['node']}"}


for fn in (flaky, broken, stuck, handle):
    setattr(module, fn.__name__, fn)


def graph(node: str, *, handler: bool = False) -> Any:
    fix = (
        (
            "  fix: {kind: function, call: 'lg_policy_fns:handle', reads: [error], "
            "writes: [output]}\n"
        )
        if handler
        else ""
    )
    edges = "  - {from: work, to: END}\n" + ("  - {from: fix, to: END}\n" if handler else "")
    return graph_from_yaml(f"name: p\nentry: work\nnodes:\n{node}\n{fix}edges:\n{edges}")


async def test_retry_on_a_listed_error_until_it_works() -> None:
    calls.clear()
    g = graph(
        "  work: {kind: function, call: 'lg_policy_fns:flaky', writes: [output],\n"
        "         retry: {attempts: 3, errors: [ConnectionError]}}"
    )
    events = [e async for e in Agent("x", model="echo", architecture=g).stream("go")]
    assert events[-1].payload["output"] == "up" and calls == ["flaky"] * 3
    retries = [e.payload for e in events if e.kind == "node_retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert "ConnectionError: down" in retries[0]["error"]


async def test_an_error_not_listed_is_not_retried() -> None:
    calls.clear()
    g = graph(
        "  work: {kind: function, call: 'lg_policy_fns:broken', writes: [output],\n"
        "         retry: {attempts: 5, errors: [ConnectionError]}}"
    )
    result = await Agent("x", model="echo", architecture=g).run("go")
    assert result.status == "failed" and "bad input" in result.reason and calls == ["broken"]


async def test_timeout_fails_the_visit_naming_the_node_and_seconds() -> None:
    g = graph(
        "  work: {kind: function, call: 'lg_policy_fns:stuck', writes: [output], timeout: 0.05}"
    )
    result = await Agent("x", model="echo", architecture=g).run("go")
    assert result.status == "failed"
    assert "'work' took longer than its timeout of 0.05 s" in result.reason


async def test_on_error_routes_the_failure_to_a_handler() -> None:
    calls.clear()
    g = graph(
        "  work: {kind: function, call: 'lg_policy_fns:broken', writes: [output],\n"
        "         retry: {attempts: 2}, on_error: fix}",
        handler=True,
    )
    agent = Agent("x", model="echo", architecture=g)
    result = await agent.run("go")
    assert result.status == "completed" and result.output == "handled ValueError from work"
    assert calls == ["broken", "broken"]  # retried first, then routed
    history = await agent.history(result.run_id)
    assert [(c.node, c.next_node) for c in history] == [
        ("", "work"),
        ("work", "fix"),
        ("fix", "END"),
    ]
    assert history[1].patch["error"]["message"] == "bad input"


def test_a_retry_names_the_error_an_error_was_raised_from() -> None:
    from loomgraph.graph.policies import RetryPolicy
    from loomgraph.protocols import ModelError

    def raised_from(cause: BaseException) -> ModelError:
        try:
            raise ModelError("model 'm' failed: RuntimeError: reset") from cause
        except ModelError as err:
            return err

    wrapped = raised_from(RuntimeError("reset"))
    assert RetryPolicy(errors=["RuntimeError"]).retries(wrapped)
    assert RetryPolicy(errors=["ModelError"]).retries(wrapped)
    assert not RetryPolicy(errors=["TimeoutError"]).retries(wrapped)
    looped = ValueError("a")
    looped.__cause__ = ValueError("b")
    looped.__cause__.__cause__ = looped  # a cycle of causes ends the walk
    assert not RetryPolicy(errors=["KeyError"]).retries(looped)

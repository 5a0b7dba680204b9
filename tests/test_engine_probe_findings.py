"""The engine probe's findings: a sync `function` node runs off the event loop, under its
`timeout`; and a run's usage counts every model call the ledger charged, also those of a
node visit that failed, was retried or was routed by `on_error` — once, resumed or not."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.engine.scope import active_scope
from loomgraph.governance import BudgetConfig, InMemoryLedger, StandardBudget
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import Graph
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelError, ModelRequest, Usage
from loomgraph.protocols.paths import journaled_usage

# Bounded waits: long enough never to be reached on a loaded machine, short enough that a
# regression fails the test instead of hanging it.
WAIT = 10.0

module = types.ModuleType("lg_probe_fns")
sys.modules["lg_probe_fns"] = module


class Blocking:
    """A sync function that blocks its thread until it is released, and says where it ran."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """As new, for the next test."""
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()
        self.thread = ""
        self.released_while_waiting = False
        self.run_id: str | None = None

    def __call__(self, state: Mapping[str, Any]) -> dict[str, Any]:
        self.thread = threading.current_thread().name
        scope = active_scope.get()  # the engine's context variables hold in the thread
        self.run_id = None if scope is None else scope.run_id
        self.entered.set()
        # True only if the event loop's thread set it while this one waited: proof that the
        # loop was not blocked by this function.
        self.released_while_waiting = self.release.wait(WAIT)
        self.returned.set()
        return {"output": "done"}


blocking = Blocking()


def sometimes_deferred(state: Mapping[str, Any]) -> Any:
    """Returns a coroutine for input `defer`, a patch naming its thread otherwise."""
    if state["input"] == "defer":
        return on_loop(state)
    return {"output": threading.current_thread().name}


async def on_loop(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"output": threading.current_thread().name}


class AsyncCallable:
    """A callable object whose call returns a coroutine: not an `async def` to `inspect`."""

    def __call__(self, state: Mapping[str, Any]) -> Awaitable[dict[str, Any]]:
        return self._patch()

    async def _patch(self) -> dict[str, Any]:
        return {"output": threading.current_thread().name}


async def ask_twice(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Two model calls in one visit: the second may fail."""
    usage = Usage()
    for _ in range(2):
        response = await ctx.call_model(ModelRequest(messages=[{"role": "user", "content": "q"}]))
        usage += response.usage
    return {"output": response.text, "usage": usage.to_dict()}


failing = {"on": True}


async def ask_then_fail(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """One model call, then a failure while `failing` says so."""
    response = await ctx.call_model(ModelRequest(messages=[{"role": "user", "content": "q"}]))
    if failing["on"]:
        raise ConnectionError("after the call")
    return {"output": response.text, "usage": response.usage.to_dict()}


for name, fn in {
    "blocking": blocking,
    "on_loop": on_loop,
    "async_callable": AsyncCallable(),
    "ask_twice": ask_twice,
    "sometimes_deferred": sometimes_deferred,
    "ask_then_fail": ask_then_fail,
}.items():
    setattr(module, name, fn)


def one_node(call: str, extra: str = "", writes: str = "output") -> Graph:
    node = f"  s: {{kind: function, call: '{call}', writes: [{writes}]{extra}}}\n"
    return graph_from_yaml(f"name: f\nentry: s\nnodes:\n{node}edges:\n  - {{from: s, to: END}}\n")


async def in_thread(wait: Any) -> bool:
    """A blocking wait of a threading.Event, off the loop; whether it was set."""
    return bool(await asyncio.wait_for(asyncio.to_thread(wait, WAIT), WAIT + 1))


# ---------------------------------------------------------------- sync function nodes


async def test_a_sync_function_node_runs_in_a_worker_thread_and_the_loop_goes_on() -> None:
    blocking.reset()
    agent = Agent("x", model="echo", architecture=one_node("lg_probe_fns:blocking"))
    run = asyncio.create_task(agent.run("go"))
    assert await in_thread(blocking.entered.wait)
    blocking.release.set()  # from the loop's thread, while the function waits
    result = await asyncio.wait_for(run, WAIT)
    assert result.status == "completed" and result.output == "done"
    assert blocking.released_while_waiting
    assert blocking.thread != threading.current_thread().name
    assert blocking.run_id == result.run_id


async def test_a_sync_function_node_s_timeout_ends_the_visit_while_its_thread_runs_on() -> None:
    blocking.reset()
    graph = one_node("lg_probe_fns:blocking", ", timeout: 0.2")
    result = await asyncio.wait_for(Agent("x", model="echo", architecture=graph).run("go"), WAIT)
    assert result.status == "failed"
    assert "'s' took longer than its timeout of 0.2 s" in result.reason
    assert blocking.entered.is_set() and not blocking.returned.is_set()  # it runs on
    blocking.release.set()
    assert await in_thread(blocking.returned.wait)


async def test_an_async_function_node_stays_on_the_event_loop() -> None:
    result = await Agent("x", model="echo", architecture=one_node("lg_probe_fns:on_loop")).run("go")
    assert result.output == threading.current_thread().name


async def test_a_sync_callable_that_returns_a_coroutine_is_awaited_on_the_loop() -> None:
    graph = one_node("lg_probe_fns:async_callable")
    for _ in range(2):  # each call's coroutine awaited on the loop
        result = await Agent("x", model="echo", architecture=graph).run("go")
        assert result.status == "completed", result.reason
        assert result.output == threading.current_thread().name


async def test_a_sync_function_that_once_returned_a_coroutine_still_runs_in_a_thread() -> None:
    graph = one_node("lg_probe_fns:sometimes_deferred", ", reads: [input]")
    agent = Agent("x", model="echo", architecture=graph)
    loop_thread = threading.current_thread().name
    outputs = []
    for prompt in ("plain", "defer", "plain"):  # one compiled node, shared by the runs
        result = await agent.run(prompt)
        assert result.status == "completed", result.reason
        outputs.append(result.output)
    assert outputs[1] == loop_thread  # the coroutine was awaited on the loop
    assert outputs[0] != loop_thread and outputs[2] != loop_thread  # each call judged alone


# ---------------------------------------------------------------- usage against the ledger


def budget() -> StandardBudget:
    return StandardBudget(BudgetConfig(total_tokens=100_000), InMemoryLedger())


async def charged(budget: Any) -> Usage:
    """What the ledger charged for model and tool calls, as a usage."""
    spent = (await budget.totals("global")).spent
    keys = ("input_tokens", "output_tokens", "model_calls", "tool_calls", "cost_usd")
    return Usage(**{k: spent[k] for k in keys if k in spent})


INT_ANSWER = """
name: uf
state:
  n: {type: int}
entry: ask
nodes:
  ask: {kind: llm, prompt: "{{ input }}", output: n%s}
%s
edges:
  - {from: ask, to: END}
%s
"""


def int_answer(policy: str = "", handler: bool = False) -> Graph:
    fallback = '  fallback: {kind: llm, prompt: "sorry", output: output}' if handler else ""
    edge = "  - {from: fallback, to: END}" if handler else ""
    return graph_from_yaml(INT_ANSWER % (policy, fallback, edge))


async def test_a_call_that_answered_counts_when_its_visit_then_fails() -> None:
    spend = budget()
    agent = Agent(
        "x", model=ScriptedModel(["not a number"]), architecture=int_answer(), budget=spend
    )
    result = await agent.run("q")
    assert result.status == "failed" and "'n'" in result.reason
    assert result.usage == await charged(spend) and result.usage.model_calls == 1


async def test_plan_execute_whose_plan_never_fits_counts_each_call() -> None:
    spend = budget()
    model = ScriptedModel(["plain", "plain", "plain"])
    result = await Agent("x", model=model, architecture="plan-execute", budget=spend).run("q")
    assert result.status == "failed"
    assert result.usage == await charged(spend) and result.usage.model_calls == 3


async def test_retried_then_routed_visits_count_every_call_and_the_journal_carries_them() -> None:
    spend = budget()
    graph = int_answer(
        ", on_error: fallback, retry: {attempts: 2, errors: [StateError]}", handler=True
    )
    model = ScriptedModel(["nan1", "nan2", "fallback answer"])
    agent = Agent("x", model=model, architecture=graph, budget=spend)
    result = await agent.run("q")
    assert result.status == "completed" and result.output == "fallback answer"
    assert result.usage == await charged(spend) and result.usage.model_calls == 3
    # The routed visit's transition carries its two calls: a resume or a report from the
    # journal counts them too.
    transitions = await agent.deps.runtime.transitions(result.run_id)
    assert journaled_usage(transitions) == result.usage
    routed = next(t for t in transitions if t.node == "ask")
    assert routed.usage.model_calls == 2 and "error" in routed.patch


async def test_a_retry_that_answers_carries_the_failed_attempt_s_call() -> None:
    spend = budget()
    graph = int_answer(", retry: {attempts: 2, errors: [StateError]}")
    agent = Agent("x", model=ScriptedModel(["nan", "7"]), architecture=graph, budget=spend)
    result = await agent.run("q")
    assert result.status == "completed", result.reason
    assert result.usage == await charged(spend) and result.usage.model_calls == 2
    transitions = await agent.deps.runtime.transitions(result.run_id)
    assert journaled_usage(transitions) == result.usage


async def test_a_model_error_in_a_routed_visit_counts_its_call() -> None:
    spend = budget()
    graph = int_answer(", on_error: fallback", handler=True)
    model = ScriptedModel([ModelError("provider down"), "fallback answer"])
    result = await Agent("x", model=model, architecture=graph, budget=spend).run("q")
    assert result.status == "completed"
    assert result.usage == await charged(spend) and result.usage.model_calls == 2


async def test_model_errors_in_retried_attempts_count_once_each() -> None:
    spend = budget()
    graph = int_answer(", retry: {attempts: 3}")
    model = ScriptedModel([ModelError("down"), RuntimeError("reset"), "7"])
    result = await Agent("x", model=model, architecture=graph, budget=spend).run("q")
    assert result.status == "completed", result.reason
    assert result.usage == await charged(spend) and result.usage.model_calls == 3


async def test_a_failed_visit_s_calls_count_when_the_step_fails_on_a_model_error() -> None:
    spend = budget()
    model = ScriptedModel(["first", ModelError("down")])
    graph = one_node("lg_probe_fns:ask_twice", writes="output, usage")
    result = await Agent("x", model=model, architecture=graph, budget=spend).run("q")
    assert result.status == "failed"
    assert result.usage == await charged(spend) and result.usage.model_calls == 2


async def test_a_resumed_run_counts_the_failed_visit_s_call_once(tmp_path: Path) -> None:
    graph = one_node("lg_probe_fns:ask_then_fail", writes="output, usage")

    def agent(journal: str) -> Agent:
        # Each journal gets its ledger beside it (an in-memory ledger is bound to the
        # journal's file), shared by the run and its resume.
        return Agent(
            "x",
            model=ScriptedModel(["answer"]),
            architecture=graph,
            budget=budget(),
            runtime=f"sqlite:{tmp_path / journal}",
        )

    async def ledger(journal: str) -> Usage:
        return await charged(agent(journal).deps.budget)

    failing["on"] = False
    whole = await agent("whole.db").run("q")
    assert whole.status == "completed" and whole.usage.model_calls == 1
    assert whole.usage == await ledger("whole.db")

    failing["on"] = True
    failed = await agent("cut.db").run("q")
    assert failed.status == "failed"
    assert failed.usage == await ledger("cut.db") == whole.usage  # the call answered, charged
    failing["on"] = False
    resumed = await agent("cut.db").resume(failed.run_id)
    assert resumed.status == "completed" and resumed.output == "answer"
    # The call was replayed from the journal, not made again: charged once, counted once.
    assert resumed.usage == whole.usage == await ledger("cut.db")

    # Failing again on resume still counts it once.
    failing["on"] = True
    failed = await agent("twice.db").run("q")
    refailed = await agent("twice.db").resume(failed.run_id)
    assert refailed.status == "failed"
    assert refailed.usage == failed.usage == whole.usage == await ledger("twice.db")
    failing["on"] = False

"""The interpreter: the ReAct loop, limits, errors, node kinds, subgraphs, the testing helper."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from loomgraph import Agent, NodeKind, register_node
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import _REGISTRY
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.testing import run_node

CALC = {"tool_calls": [{"tool": "add", "args": {"a": 2, "b": 3}}]}


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_react_loop_runs_tools_and_answers() -> None:
    agent = Agent("You add.", model=ScriptedModel([CALC, "2 + 3 = 5"]), tools=[add])
    result = await agent.run("what is 2+3?")
    assert result.status == "completed" and result.output == "2 + 3 = 5"
    assert result.node_visits == {"model": 2, "tools": 1}
    assert result.turns == 2 and result.usage.input_tokens == 20
    history = await agent.history(result.run_id)
    assert [c.node for c in history] == ["", "model", "tools", "model"]  # seq 0: first state
    assert [c.next_node for c in history] == ["model", "tools", "model", "END"]
    tool_message = history[2].patch["messages"][0]
    assert tool_message["role"] == "tool" and tool_message["content"] == "5"


async def test_event_order_and_payloads() -> None:
    agent = Agent("x", model=ScriptedModel([CALC, "done"]), tools=[add])
    events = [e async for e in agent.stream("go", user_id="u1", session_id="s1")]
    kinds = [e.kind for e in events]
    assert kinds == [
        "run_started",
        "node_started",
        "node_completed",
        "node_started",
        "tool_call",
        "permission_decision",
        "tool_result",
        "node_completed",
        "node_started",
        "model_chunk",
        "node_completed",
        "run_completed",
    ]
    call = events[4].payload["call"]
    assert call["tool"] == "add" and call["args"] == {"a": 2, "b": 3} and call["id"]
    assert events[9].payload["chunk"]["text"] == "done"
    assert all(e.user_id == "u1" and e.session_id == "s1" for e in events)
    assert [e.seq for e in events if e.kind == "node_completed"] == [1, 2, 3]
    assert events[-1].payload["result"]["output"] == "done"


async def test_a_stream_consumer_hears_run_started_before_the_run_does_anything() -> None:
    asked: list[int] = []

    def script(request: ModelRequest) -> str:
        asked.append(request.call_index)
        return "done"

    agent = Agent("x", model=ScriptedModel(script))
    async for event in agent.stream("go"):
        if event.kind == "run_started":
            # (what a caller needs to name the run if it is interrupted from here on)
            assert asked == [], "the run called its model before its start was heard"
    assert asked == [0]


async def test_a_model_that_never_stops_hits_the_visit_limit() -> None:
    agent = Agent("x", model=ScriptedModel(lambda request: CALC), tools=[add])
    result = await agent.run("loop forever")
    assert result.status == "limit_reached"
    assert "visit limit" in result.reason
    assert sum(result.node_visits.values()) <= 50


async def test_unknown_tool_and_bad_arguments_reach_the_model_not_the_caller() -> None:
    script = ScriptedModel(
        [
            {"tool_calls": [{"tool": "nope", "args": {}}, {"tool": "add", "args": {"a": "x"}}]},
            "sorry",
        ]
    )
    agent = Agent("x", model=script, tools=[add])
    events = [e async for e in agent.stream("go")]
    results = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert results[0]["is_error"] and results[0]["error_type"] == "unknown_tool"
    assert "add" in results[0]["content"]
    assert results[1]["is_error"] and results[1]["error_type"] == "invalid_arguments"
    assert events[-1].payload["status"] == "completed"


async def test_node_exception_fails_the_run_naming_the_node() -> None:
    def boom(state: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("kaput")

    import sys
    import types

    module = types.ModuleType("lg_test_boom")
    module.boom = boom  # type: ignore[attr-defined]
    sys.modules["lg_test_boom"] = module
    graph = graph_from_yaml(
        "name: b\nentry: f\nnodes:\n  f: {kind: function, call: "
        "'lg_test_boom:boom'}\nedges:\n  - {from: f, to: END}\n"
    )
    agent = Agent("x", model="echo", architecture=graph)
    events = [e async for e in agent.stream("go")]
    error = next(e for e in events if e.kind == "error")
    assert "'f'" in error.payload["error"] and "kaput" in error.payload["error"]
    assert events[-1].payload["status"] == "failed"


async def test_writing_an_undeclared_field_fails_the_run() -> None:
    @register_node("test_rogue")
    class Rogue(NodeKind):
        default_writes = ("output",)

        async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
            return {"messages": ["sneaky"]}

    try:
        graph = graph_from_yaml(
            "name: r\nentry: r\nnodes:\n  r: {kind: test_rogue}\nedges:\n  - {from: r, to: END}\n"
        )
        result = await Agent("x", model="echo", architecture=graph).run("go")
    finally:
        _REGISTRY.pop("test_rogue")  # keep the registry as other tests expect it
    assert result.status == "failed" and "does not declare" in result.reason


@pytest.mark.parametrize("usage", [{"input_tokens": -5}, {"tokens": 3}, {"cost_usd": "1"}])
async def test_a_node_reporting_an_impossible_usage_fails_the_run_naming_it(
    usage: dict[str, Any],
) -> None:
    @register_node("test_usage_writer")
    class UsageWriter(NodeKind):
        default_writes = ("usage",)

        async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
            return {"usage": usage}

    try:
        graph = graph_from_yaml(
            "name: u\nentry: u\nnodes:\n  u: {kind: test_usage_writer}\n"
            "edges:\n  - {from: u, to: END}\n"
        )
        agent = Agent("x", model="echo", architecture=graph)
        result = await agent.run("go")
    finally:
        _REGISTRY.pop("test_usage_writer")
    assert result.status == "failed" and "'u'" in result.reason and "usage" in result.reason
    record = await agent.deps.runtime.load_run(result.run_id)
    assert record is not None and record.status == "failed"  # journaled as it ended


class Plan(BaseModel):
    steps: list[str]


async def test_llm_node_structured_output_and_subgraph(tmp_path: Path) -> None:
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nentry: plan\n"
        "state:\n  plan: {type: 'tests.test_interpreter:Plan'}\n  answer: {type: str}\n"
        "nodes:\n"
        "  plan: {kind: llm, prompt: 'Plan for {{ input }}', output: plan,"
        " schema: 'tests.test_interpreter:Plan'}\n"
        "  work: {kind: subgraph, graph: react, inputs: {input: input},"
        " outputs: {answer: output}}\n"
        "edges:\n  - {from: plan, to: work}\n  - {from: work, to: END}\n"
    )
    model = ScriptedModel(
        [
            {"tool_calls": [{"tool": "respond", "args": {"steps": ["add", "report"]}}]},
            CALC,
            "five",
        ]
    )
    agent = Agent("x", model=model, tools=[add], architecture=tmp_path / "outer.yaml")
    events = [e async for e in agent.stream("2+3")]
    result = events[-1].payload["result"]
    assert result["status"] == "completed", result["reason"]
    history = await agent.history(result["run_id"])
    assert history[-1].state["plan"] == {"steps": ["add", "report"]}
    assert history[-1].state["answer"] == "five"
    nodes = [c.node for c in history]
    assert nodes == ["", "plan", "work/model", "work/tools", "work/model", "work"]
    assert any(e.node == "work/tools" and e.kind == "tool_call" for e in events)
    assert result["usage"]["model_calls"] == 3


async def test_run_node_helper_returns_patch_events_and_effects() -> None:
    run = await run_node(
        "react",
        "model",
        {"messages": [{"role": "user", "content": "hi"}]},
        model=[CALC],
        tools=[add],
    )
    assert run.patch["messages"][0]["tool_calls"][0]["tool"] == "add"
    assert [e.kind for e in run.effects] == ["model"]
    assert run.effects[0].status == "done"
    tools_run = await run_node("react", "tools", run.state, tools=[add])
    assert tools_run.patch["messages"][0]["content"] == "5"
    assert tools_run.kinds() == ["tool_call", "permission_decision", "tool_result"]
    assert [e.kind for e in tools_run.effects] == ["tool"]


async def test_parallel_tool_calls_come_back_in_call_order() -> None:
    release = asyncio.Event()

    async def slow(x: int) -> int:
        """Waits until released."""
        await release.wait()
        return x

    async def fast(x: int) -> int:
        """Returns at once and releases the slow one."""
        release.set()
        return x * 10

    turn = {
        "tool_calls": [
            {"id": "c1", "tool": "slow", "args": {"x": 1}},
            {"id": "c2", "tool": "fast", "args": {"x": 2}},
        ]
    }
    run = await run_node(
        "react",
        "tools",
        {"messages": [{"role": "assistant", "content": "", **turn}]},
        tools=[slow, fast],
    )
    assert [m["content"] for m in run.patch["messages"]] == ["1", "20"]


async def test_a_kind_journals_work_once_finished_and_replays_it_on_retry() -> None:
    """`ctx.recorded` reads a finished effect without journaling an intent (as `map` does)."""
    executions: list[int] = []

    @register_node("test_once")
    class Once(NodeKind):
        default_writes = ("output",)

        async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
            recorded = await ctx.recorded("work")
            if recorded is not None:
                ctx.count_replayed_model_calls(recorded["model_calls"])
                return {"output": f"replayed {recorded['n']}"}
            executions.append(1)
            done = {"n": len(executions), "model_calls": 2}

            async def given() -> dict[str, Any]:
                return done

            await ctx.effect("work", {}, given)
            raise ConnectionError("lost after the work was journaled")

    try:
        graph = graph_from_yaml(
            "name: o\nentry: o\nnodes:\n"
            "  o: {kind: test_once, retry: {attempts: 2, backoff: 0}}\n"
            "  m: {kind: llm, prompt: 'x', output: answer}\n"
            "state:\n  answer: {type: str}\n"
            "edges:\n  - {from: o, to: m}\n  - {from: m, to: END}\n"
        )
        seen: list[int] = []

        class Counting(ScriptedModel):
            async def stream(self, request: ModelRequest) -> Any:
                seen.append(request.call_index)
                async for chunk in super().stream(request):
                    yield chunk

        agent = Agent("x", model=Counting(["a", "b", "c"]), architecture=graph)
        result = await agent.run("go")
    finally:
        _REGISTRY.pop("test_once")
    assert result.status == "completed", result.reason
    assert executions == [1]  # the retry replayed the finished work
    history = await agent.history(result.run_id)
    assert history[-1].state["output"] == "replayed 1"
    assert seen == [2]  # the model call after it follows the two the work counted


async def test_a_child_graph_that_reaches_its_own_visit_limit_is_named_not_the_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nentry: work\nlimits: {max_visits: 500}\n"
        "nodes:\n  work: {kind: subgraph, graph: react, inputs: {input: input}}\n"
        "edges:\n  - {from: work, to: END}\n"
    )
    model = ScriptedModel(lambda request: CALC)
    result = await Agent("x", model=model, tools=[add], architecture=tmp_path / "outer.yaml").run(
        "loop forever"
    )
    assert result.status == "limit_reached"
    assert result.reason.startswith("visit limit of graph 'react' at work reached (50)")

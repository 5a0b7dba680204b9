"""Framework overhead per ReAct turn, and wall time of many concurrent runs.

    python bench/react_overhead.py [--turns 50] [--repeat 30] [--runs 1000]

1. One run of `--turns` tool turns on a ScriptedModel with a no-op async tool, so nearly all
   the time is the framework's. It is reported as µs per turn, next to a hand-written loop
   doing the same model and tool calls with no framework, measured in the same process, and
   as the ratio of the two.
2. `--runs` concurrent 3-turn runs with a model that sleeps 20 ms a turn: wall time over the
   ideal (3 x 20 ms, as if the framework cost nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

from loomgraph import Agent, Graph
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelChunk, ModelRequest

CALL = {"tool_calls": [{"tool": "noop", "args": {"x": 1}}], "usage": {"input_tokens": 1}}


async def noop(x: int) -> int:
    """Do nothing."""
    return x


def script(turns: int) -> ScriptedModel:
    return ScriptedModel([*([CALL] * turns), "done"])


async def hand_loop(model: ScriptedModel, turns: int) -> None:
    """The same calls without a framework: the floor loomgraph is measured against."""
    messages: list[dict[str, object]] = [{"role": "user", "content": "go"}]
    for i in range(turns + 1):
        request = ModelRequest(messages=list(messages), call_index=i)  # type: ignore[arg-type]
        calls = [c["call"] async for c in model.stream(request) if c["type"] == "tool_call"]
        messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        for call in calls:
            messages.append({"role": "tool", "content": str(await noop(**call["args"]))})


def long_react() -> Graph:
    """The built-in ReAct graph with visit limits high enough for a long run."""
    data = load_graph("react").to_data()
    data["limits"] = {"max_visits": 1000, "max_node_visits": 500}
    return graph_from_data(data)


async def per_turn(turns: int, repeat: int) -> tuple[float, float]:
    agent = Agent("bench", model=script(turns), tools=[noop], architecture=long_react())
    model = script(turns)
    framework, floor = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        result = await agent.run("go")
        framework.append(time.perf_counter() - start)
        assert result.status == "completed" and result.turns == turns + 1, result.reason
        start = time.perf_counter()
        await hand_loop(model, turns)
        floor.append(time.perf_counter() - start)
    return (statistics.median(framework) / turns * 1e6, statistics.median(floor) / turns * 1e6)


class SleepyModel:
    """Takes 20 ms a turn, like a fast provider; calls the tool twice, then answers."""

    name = "sleepy"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        await asyncio.sleep(0.02)
        if request.call_index < 2:
            yield {
                "type": "tool_call",
                "call": {"id": f"c{request.call_index}", "tool": "noop", "args": {"x": 1}},
            }
        else:
            yield {"type": "text", "text": "done"}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def concurrent(runs: int) -> float:
    agent = Agent("bench", model=SleepyModel(), tools=[noop])
    start = time.perf_counter()
    results = await asyncio.gather(*(agent.run("go", user_id=f"u{i}") for i in range(runs)))
    wall = time.perf_counter() - start
    assert all(r.status == "completed" for r in results)
    return wall / (3 * 0.02)


def main() -> None:
    """Run both benchmarks and print the numbers."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    framework, floor = asyncio.run(per_turn(args.turns, args.repeat))
    print(f"ReAct turn, {args.turns} tool turns per run, median of {args.repeat} runs:")
    print(f"  loomgraph        {framework:8.1f} µs/turn")
    print(f"  hand-written loop{floor:8.1f} µs/turn")
    print(f"  overhead ratio   {framework / floor:8.1f}x the hand loop")
    over = asyncio.run(concurrent(args.runs))
    print(f"{args.runs} concurrent 3-turn runs, 20 ms model: {over:.2f}x the ideal wall time")


if __name__ == "__main__":
    main()

"""The main job: a ReAct agent with two real tools on a zero-key model.

It streams the run's events to the terminal and writes the graph's diagram to `react.svg`.
The model is a `ScriptedModel` whose turns are decided by a small rule, so it needs no key
and no network; swap in `model="claude-opus-4-7"` (with ANTHROPIC_API_KEY set) for the real
thing.
"""

from __future__ import annotations

import ast
import asyncio
import operator
import sys
from pathlib import Path

from loomgraph import Agent, tool
from loomgraph.authoring.render import render
from loomgraph.cli.output import print_event
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}

CAPITALS = {"japan": "Tokyo", "france": "Paris", "kenya": "Nairobi", "peru": "Lima"}


@tool
def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression such as `23 * 7 + 1`.

    Args:
        expression: numbers with + - * / ** and parentheses.
    """

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))  # type: ignore[no-any-return]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))  # type: ignore[no-any-return]
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")

    return value(ast.parse(expression, mode="eval").body)


@tool
def capital_of(country: str) -> str:
    """Look up the capital city of a country in the local atlas.

    Args:
        country: the country's English name.
    """
    try:
        return CAPITALS[country.strip().lower()]
    except KeyError:
        raise KeyError(f"{country!r} is not in the atlas ({', '.join(CAPITALS)})") from None


def planner(request: ModelRequest) -> dict[str, object]:
    """A zero-key stand-in for a model: call both tools at once, then answer from results."""
    results = [m["content"] for m in request.messages if m["role"] == "tool"]
    if not results:
        return {
            "text": "Let me compute that and look up the capital.",
            "tool_calls": [
                {"tool": "calculator", "args": {"expression": "23 * 7 + 1"}},
                {"tool": "capital_of", "args": {"country": "Japan"}},
            ],
        }
    return {"text": f"23 * 7 + 1 = {results[0]}, and the capital of Japan is {results[1]}."}


async def main(svg: Path) -> int:
    """Run the agent, print each event as it streams, and draw the graph."""
    agent = Agent(
        "You are a helpful assistant.",
        model=ScriptedModel(planner, chunk_size=12),
        tools=[calculator, capital_of],
        architecture="react",
    )
    status = "failed"
    # No session_id: this agent has no memory (memory=), so runs of a session would share
    # nothing; with memory="sqlite:./memory.db", session_id="..." lets later runs see this one.
    async for event in agent.stream(
        "What is 23 * 7 + 1, and what is the capital of Japan?", user_id="alice"
    ):
        print_event(event)
        status = event.payload.get("status", status)
    render(agent.graph, svg)
    print(f"wrote {svg}")
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "react.svg"))))

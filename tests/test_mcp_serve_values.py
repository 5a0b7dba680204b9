"""`loomgraph mcp-serve`: a run that stops at an `interrupt` node shows its question
(`awaiting_input`: node, message, type, schema, key), and `resume` answers it with `value`
and the question's `key`, as HTTP `/resume` does. Before, MCP had no way to answer a
question: the run stayed waiting, and the result showed nothing of what it asked. Driven by
the official SDK's client over stdio, against a SQLite journal; the agent is `make_agent`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import loomgraph
from loomgraph import Agent
from loomgraph.models import ScriptedModel

TESTS = Path(__file__).resolve().parent
SRC = Path(loomgraph.__file__).resolve().parents[1]

GRAPH = """
name: ask
state:
  count: {type: int, default: 0}
  note: {type: str, default: ""}
entry: how_many
nodes:
  how_many: {kind: interrupt, request: int, output: count, message: "How many for {{ input }}?"}
  why: {kind: interrupt, request: str, output: note, message: "Why {{ count }}?"}
edges:
  - {from: how_many, to: why}
  - {from: why, to: END}
"""


def make_agent() -> Agent:
    """Two questions in a row; the journal is a SQLite file in the test's folder."""
    folder = Path(os.environ["VALUES_TEST_DIR"])
    graph = folder / "ask.yaml"
    graph.write_text(GRAPH)
    return Agent(
        "ask",
        model=ScriptedModel(["unused"]),
        architecture=graph,
        runtime=f"sqlite:{folder / 'journal.db'}",
        name="ask",
    )


@contextlib.asynccontextmanager
async def user(folder: Path) -> AsyncIterator[ClientSession]:
    """A client of `mcp-serve` as alice, who has no approver role (a value needs none)."""
    agent = ("--agent", "test_mcp_serve_values:make_agent")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "loomgraph.cli.main", "mcp-serve", *agent, "--user", "alice"],
        env={
            "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
            "VALUES_TEST_DIR": str(folder),
            "PATH": os.environ.get("PATH", ""),
        },
        cwd=str(TESTS),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_question_is_shown_and_answered_by_its_key(tmp_path: Path) -> None:
    async with user(tmp_path) as session:
        started: Any = (await session.call_tool("run", {"prompt": "apples"})).structured_content
        run_id, asked = started["run_id"], started["awaiting_input"]
        assert started["status"] == "interrupted"
        assert asked["node"] == "how_many" and asked["message"] == "How many for apples?"
        assert asked["type"] == "int" and asked["schema"] == {"type": "integer"}
        assert asked["key"].startswith(f"{run_id}:")
        # Unnamed, a value could answer whatever question is pending when it arrives.
        unnamed = await session.call_tool("resume", {"run_id": run_id, "value": 3})
        assert unnamed.is_error and "key is required" in text(unnamed)
        wrong_type = {"run_id": run_id, "value": "three", "key": asked["key"]}
        refused = await session.call_tool("resume", wrong_type)
        assert refused.is_error and "int" in text(refused)
        answer = {"run_id": run_id, "value": 3, "key": asked["key"]}
        second: Any = (await session.call_tool("resume", answer)).structured_content
        why = second["awaiting_input"]
        assert why["message"] == "Why 3?" and why["key"] != asked["key"]
        resent = await session.call_tool("resume", answer)  # the same message again
        assert resent.is_error and "ValueNotPending" in text(resent)
        both = {"run_id": run_id, "value": "x", "approve": True, "key": why["key"]}
        mixed = await session.call_tool("resume", both)
        assert mixed.is_error and "either" in text(mixed)
        reply = {"run_id": run_id, "value": "because", "key": why["key"]}
        done: Any = (await session.call_tool("resume", reply)).structured_content
        assert done["status"] == "completed", done
        assert "awaiting_input" not in done

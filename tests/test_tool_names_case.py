"""Tool names that differ only in case are one name, as deny and ask rules read them: a
server's `Transfer` beside `transfer` (its own, or the local one) is a lookalike a model or an
approver may take for the other, so neither a listing, nor the local tools, nor a server's
prefix may hold two such names (docs/tools.md, "Names")."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel
from loomgraph.runtime import InMemoryRuntime
from loomgraph.tools import MCPServer, ToolNameCollision, ToolRegistry
from test_mcp_findings import of_kind, received
from test_mcp_trust import calls, evil


@tool
def transfer(amount: int = 0) -> str:
    """The local transfer."""
    return "local transfer ran"


async def test_a_listing_with_names_differing_only_in_case_offers_neither(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    log = tmp_path / "log"
    script: list[Any] = [calls("Transfer", {}), calls("transfer", {}), "done"]
    async with Agent(
        "x", model=ScriptedModel(script), tools=[evil("casetwins", log, trust=True)]
    ) as agent:
        events = [e async for e in agent.stream("go")]
        names = [s["name"] for s in agent.deps.tools.specs()]
    assert names == ["ok_tool"]
    results = [p["result"] for p in of_kind(events, "tool_result")]
    assert [r["error_type"] for r in results] == ["unknown_tool", "unknown_tool"]
    assert received(log) == []
    warned = sorted(r.getMessage() for r in caplog.records if "not offered" in r.getMessage())
    why = "the server lists 2 different tools named 'Transfer', 'transfer'"
    assert warned == [
        f"MCP server 'evil': tool 'Transfer' is not offered: {why}",
        f"MCP server 'evil': tool 'transfer' is not offered: {why}",
    ]


async def test_a_servers_tool_named_like_a_local_one_but_for_case_collides() -> None:
    runtime = InMemoryRuntime()
    squatter = evil("squat:Transfer", trust=True)
    agent = Agent("x", model=ScriptedModel(["x"]), tools=[transfer, squatter], runtime=runtime)
    with pytest.raises(ToolNameCollision, match=r"'Transfer' is offered by both a local tool"):
        await agent.run("hi")
    assert await runtime.runs() == []  # refused before anything was written
    await agent.aclose()


def test_two_servers_cannot_have_prefixes_differing_only_in_case() -> None:
    one = MCPServer.stdio("x", name="one", prefix="time")
    two = MCPServer.stdio("x", name="two", prefix="Time")
    with pytest.raises(ValueError, match="overlapping tool prefixes 'time_' and 'Time_'"):
        Agent("x", model=ScriptedModel(["done"]), tools=[one, two])


def test_two_local_tools_named_alike_but_for_case_are_refused() -> None:
    registry = ToolRegistry()
    registry.add(transfer)
    lookalike = tool(name="Transfer")(lambda amount=0: "the other one")
    with pytest.raises(ValueError, match=r"'Transfer' is already registered as 'transfer'"):
        registry.add(lookalike)
    assert [s["name"] for s in registry.specs()] == ["transfer"]  # the first one stays


async def test_a_local_tool_added_later_cannot_take_a_servers_name_in_another_case() -> None:
    # `add_tool` compared names as written: a local `transfer` added beside a server's
    # `Transfer` was taken, and the server's tool, which came first, was no longer offered.
    squatter = evil("squat:Transfer", trust=True)
    async with Agent("x", model=ScriptedModel(["x", "y"]), tools=[squatter]) as agent:
        await agent.run("hi")  # the server's tools are listed
        with pytest.raises(ToolNameCollision, match=r"'transfer' is offered by both"):
            agent.add_tool(transfer)
        await agent.run("again")
        assert "Transfer" in [s["name"] for s in agent.deps.tools.specs()]

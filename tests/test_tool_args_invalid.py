"""A model that keeps calling a tool with arguments the tool rejects: each call gets an error
naming the field, the tool never runs, and after `max_invalid_tool_args` calls in a row the
run fails with ToolArgsInvalid instead of looping to its visit limit."""

from __future__ import annotations

from typing import Any

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel

ran: list[tuple[int, int]] = []


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    ran.append((a, b))
    return a + b


def call(**args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "add", "args": args}]}


def bad() -> dict[str, Any]:
    return call(a="seven", b=2)


async def test_invalid_arguments_fail_the_run_after_three_calls_in_a_row() -> None:
    ran.clear()
    agent = Agent("x", model=ScriptedModel([bad() for _ in range(10)]), tools=[add])
    events = [e async for e in agent.stream("add")]
    results = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert len(results) == 3 and ran == []
    assert all(r["error_type"] == "invalid_arguments" and "- a:" in r["content"] for r in results)
    final = events[-1].payload["result"]
    assert final["status"] == "failed"
    assert "ToolArgsInvalid" in final["reason"] and "'add'" in final["reason"]
    assert "3 times in a row" in final["reason"]


async def test_a_valid_call_resets_the_count_and_the_limit_is_configurable() -> None:
    ran.clear()
    script = [bad(), bad(), call(a=1, b=2), bad(), bad(), "done"]
    agent = Agent("x", model=ScriptedModel(script), tools=[add])
    result = await agent.run("add")
    assert result.status == "completed" and ran == [(1, 2)]
    strict = Agent("x", model=ScriptedModel([bad(), "never"]), tools=[add], max_invalid_tool_args=1)
    failed = await strict.run("add")
    assert failed.status == "failed" and "1 times in a row" in failed.reason


async def test_extra_fields_are_invalid_arguments() -> None:
    ran.clear()
    agent = Agent("x", model=ScriptedModel([call(a=1, b=2, c=3), "ok"]), tools=[add])
    events = [e async for e in agent.stream("add")]
    (result,) = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert result["error_type"] == "invalid_arguments"
    assert "- c: unexpected argument" in result["content"]
    assert ran == []


paid: list[float] = []


@tool
def pay(amount: float) -> str:
    """Pay an amount."""
    paid.append(amount)
    return "paid"


async def test_a_number_no_journal_keeps_is_invalid_in_every_spelling() -> None:
    # A NaN or infinite number is refused before any tool runs (`check_tool_args`); the same
    # value spelled as a string ("nan", "-Infinity", "1e400") was turned into one by the
    # lax float parsing and reached the tool, where `nan > limit` is False.
    from loomgraph.tools import ToolRegistry

    paid.clear()
    registry = ToolRegistry([pay])
    for spelled in ("nan", "NaN", "inf", "-Infinity", "1e400"):
        call: Any = {"id": "c", "tool": "pay", "args": {"amount": spelled}}
        result = await registry.call(call, idempotency_key="k")
        assert result.get("error_type") == "invalid_arguments", (spelled, result)
        assert "amount" in result["content"] and "finite" in result["content"], result
    assert paid == []
    ok: Any = {"id": "c", "tool": "pay", "args": {"amount": "12.5"}}
    assert (await registry.call(ok, idempotency_key="k"))["content"] == "paid"
    assert paid == [12.5]

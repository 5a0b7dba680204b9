"""Rules and hooks read a call's arguments as its tool will receive them.

A Python tool validates the model's arguments in pydantic's lax mode, which converts
`"yes"` to `True` for a bool parameter and `"01"` to `1` for an int one. A rule matched on
the arguments as sent would not see the value that runs: `deny: delete(force=true)` let
`force="yes"` through, and the tool ran with `force=True`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.governance.null import AllowAll
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Decision, ToolCall

RAN: list[tuple[str, Any]] = []


class Recording(ScriptedModel):
    """Plays its script and keeps the last tool result it was shown."""

    seen = ""

    async def stream(self, request: Any) -> Any:
        tool_messages = [m for m in request.messages if m.get("role") == "tool"]
        if tool_messages:
            Recording.seen = str(tool_messages[-1]["content"])
        async for chunk in super().stream(request):
            yield chunk


@tool
def delete(path: str, force: bool = False) -> str:
    """Delete a file."""
    RAN.append(("delete", force))
    return "deleted"


@tool
def kill(pid: int) -> str:
    """Stop a process."""
    RAN.append(("kill", pid))
    return "stopped"


def _agent(call: dict[str, Any], permissions: Any, **kwargs: Any) -> Agent:
    Recording.seen = ""
    model = Recording([{"tool_calls": [call]}, "done"])
    return Agent("x", model=model, tools=[delete, kill], permissions=permissions, **kwargs)


async def _run(call: dict[str, Any], permissions: Any, **kwargs: Any) -> Any:
    RAN.clear()
    return await _agent(call, permissions, **kwargs).run("go", user_id="u")


DENY_FORCE = StandardPermissions(
    deny=["delete(force=true)"], ask=["kill(pid=1)"], allow=["delete", "kill"], mode="strict"
)


@pytest.mark.parametrize("spelling", ["yes", "on", "1", "t", "y", 1, 1.0, "true", True])
async def test_a_deny_rule_reads_a_bool_as_the_tool_will(spelling: Any) -> None:
    result = await _run({"tool": "delete", "args": {"path": "/srv", "force": spelling}}, DENY_FORCE)
    assert RAN == []
    assert result.status == "completed"
    assert "permission denied" in Recording.seen


@pytest.mark.parametrize("spelling", [1.0, "1.0", "01", "+1", True, " 1 "])
async def test_an_ask_rule_reads_an_int_as_the_tool_will(spelling: Any) -> None:
    result = await _run({"tool": "kill", "args": {"pid": spelling}}, DENY_FORCE)
    assert RAN == []
    assert result.status == "awaiting_approval"
    # The approver is shown the call as the model sent it: that is what the journal keeps.
    assert result.pending.call["args"] == {"pid": spelling}


async def test_arguments_the_tool_refuses_are_checked_as_sent() -> None:
    # "maybe" is no bool: the rules read it as sent (no match), and the tool refuses it.
    await _run({"tool": "delete", "args": {"path": "/srv", "force": "maybe"}}, DENY_FORCE)
    assert RAN == []
    assert "force" in Recording.seen and "permission denied" not in Recording.seen


async def test_an_edited_approval_is_checked_as_the_tool_will_read_it() -> None:
    permissions = StandardPermissions(deny=["delete(force=true)"], ask=["delete"])
    call = {"tool": "delete", "args": {"path": "/srv"}}
    agent = _agent(call, permissions)
    RAN.clear()
    waiting = await agent.run("go", user_id="u")
    assert waiting.status == "awaiting_approval"
    done = await agent.resume(waiting.run_id, approve={"args": {"path": "/srv", "force": "on"}})
    assert done.status == "completed"
    assert RAN == []
    assert "denied by rule" in Recording.seen


async def test_a_hook_reads_the_arguments_as_the_tool_will() -> None:
    seen: list[Any] = []
    agent = _agent({"tool": "delete", "args": {"path": "/srv", "force": "yes"}}, AllowAll())

    @agent.hooks.before_tool
    async def no_force(call: ToolCall) -> Decision | None:
        seen.append(call["args"]["force"])
        if call["args"].get("force") is True:
            return Decision("deny", "hook:no-force", "forced deletes are off")
        return None

    RAN.clear()
    await agent.run("go", user_id="u")
    assert seen == [True]
    assert RAN == []


def test_standard_permissions_say_whether_they_read_arguments() -> None:
    assert not StandardPermissions().reads_arguments
    assert not StandardPermissions(allow=["delete"], ask=["kill"]).reads_arguments
    assert StandardPermissions(deny=["delete(force=true)"]).reads_arguments
    assert StandardPermissions(ask=["kill unless kill(pid>100)"]).reads_arguments
    assert StandardPermissions(per_user={"a": {"deny": ["kill(pid=1)"]}}).reads_arguments
    assert StandardPermissions(policy=lambda call, spec, user: "default").reads_arguments
    assert not AllowAll().reads_arguments


# Any JSON value the model may send for `force`: the tool never runs with force=True.
JSON_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-2, max_value=2),
    st.sampled_from(["yes", "no", "on", "off", "1", "0", "t", "f", "y", "n", "TRUE", "True"]),
    st.text(max_size=6),
    st.none(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(force=JSON_SCALARS)
def test_a_denied_value_never_runs_however_it_is_spelled(force: Any) -> None:
    call = {"tool": "delete", "args": {"path": "/srv", "force": force}}
    asyncio.run(_run(call, DENY_FORCE))
    assert ("delete", True) not in RAN

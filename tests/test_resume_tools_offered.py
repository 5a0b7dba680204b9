"""A resume by an Agent that does not offer a tool the run still owes a call to is refused
before anything is journaled (`ToolNotOffered`): the run waits for approval of a call to it,
or was cut off during one (its effect begun, no outcome). Going on, the call was told the
tool is unknown: a request asked of a person was dropped without an answer, and a call that
may have acted was left `pending` in a completed run, with no `effect_unknown_after_crash`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.agent.resume_errors import ToolNotOffered
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus, RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

PAY: Any = {"tool_calls": [{"tool": "pay", "args": {"to": "bob"}}]}
paid: list[str] = []


@tool
def pay(to: str) -> str:
    """Pay someone."""
    paid.append(to)
    return "paid"


@tool
def look(what: str) -> str:
    """Look something up."""
    return what


def payer(journal: Path, tools: list[Any], ask: bool = True, **options: Any) -> Agent:
    permissions = StandardPermissions(ask=["pay"] if ask else [], allow=["pay", "look"])
    return Agent(
        "x",
        model=ScriptedModel([PAY, "done"]),
        tools=tools,
        permissions=permissions,
        runtime=f"sqlite:{journal}",
        name="payer",
        **options,
    )


async def waiting_run(journal: Path) -> str:
    """A run of `payer` waiting for approval of its `pay` call; its id."""
    paid.clear()
    async with payer(journal, [pay, look]) as first:
        waiting = await first.run("pay bob")
    assert waiting.status == RunStatus.AWAITING_APPROVAL
    return waiting.run_id


@pytest.mark.parametrize("answer", [{}, {"approve": True}, {"approve": False}])
async def test_a_waiting_approval_is_not_dropped_by_a_resume_without_its_tool(
    tmp_path: Path, answer: dict[str, Any]
) -> None:
    journal = tmp_path / "journal.db"
    waiting_id = await waiting_run(journal)
    async with payer(journal, [look]) as other:
        with pytest.raises(ToolNotOffered, match=r"'pay'.*offers: look.*still waits"):
            await other.resume(waiting_id, **answer)
    async with SqliteRuntime(journal) as runtime:
        kept = await runtime.load_run(waiting_id)
        assert kept is not None and kept.status == RunStatus.AWAITING_APPROVAL
    # The request is still there to answer, with the tools the run started with.
    async with payer(journal, [pay, look]) as again:
        done = await again.resume(waiting_id, approve=True)
    assert (done.status, paid) == (RunStatus.COMPLETED, ["bob"])


WORKER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from loomgraph import Agent, tool
    from loomgraph.governance import StandardPermissions
    from loomgraph.models import ScriptedModel

    journal, ledger = sys.argv[1], sys.argv[2]

    @tool
    def pay(to: str, idempotency_key: str) -> str:
        '''Pay someone.'''
        with open(ledger, "a") as out:
            out.write(idempotency_key + "\\n")
        print("run", idempotency_key.split(":")[0], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # cut off after acting, before its outcome

    agent = Agent("x", model=ScriptedModel([{"tool_calls": [{"tool": "pay",
                  "args": {"to": "bob"}}]}, "done"]), tools=[pay],
                  permissions=StandardPermissions(allow=["pay", "look"]),
                  runtime=f"sqlite:{journal}", name="payer")
    asyncio.run(agent.run("pay bob"))
    """
)


async def test_a_call_cut_off_is_not_told_its_tool_is_unknown(tmp_path: Path) -> None:
    journal, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = subprocess.run(
        [sys.executable, str(script), str(journal), str(ledger)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    run_id = done.stdout.split()[1]
    async with payer(journal, [look], ask=False) as other:
        with pytest.raises(ToolNotOffered, match="cut off during a call to 'pay'"):
            await other.resume(run_id)
    async with SqliteRuntime(journal) as runtime:
        kept = await runtime.load_run(run_id)
        assert kept is not None and kept.status == RunStatus.RUNNING
        [effect] = [e for e in await runtime.effects(run_id) if e.kind == "tool"]
        assert (effect.status, effect.attempts) == (EffectStatus.PENDING, 1)
    # With its tool, the resume reports the call as unknown after the crash and makes it again.
    paid.clear()
    async with payer(journal, [pay, look], ask=False) as again:
        kinds = [event.kind async for event in again.resume_stream(run_id)]
    assert "effect_unknown_after_crash" in kinds and paid == ["bob"]


async def test_a_resuming_agents_handler_answers_a_request_journaled_without_one(
    tmp_path: Path,
) -> None:
    # Documented (docs/governance.md): a handler is an explicit answer; whoever may resume
    # the run may also pass `approve=`. Its denial is used as the request's answer.
    journal = tmp_path / "journal.db"
    waiting_id = await waiting_run(journal)
    answering = payer(journal, [pay, look], approval_handler=lambda call, decision: False)
    async with answering:
        done = await answering.resume(waiting_id)
    assert (done.status, paid) == (RunStatus.COMPLETED, [])


def test_a_keys_node_is_read_back_from_the_key_a_child_graph_made() -> None:
    # The key path holds each enclosing node with its visit (`NodeContext.run_graph`).
    from loomgraph.engine.effects import EffectKey

    key = EffectKey("run:1", "plan.1/0/execute.2/tools", 3, "1")
    assert EffectKey.node_of(key.text, "run:1") == "plan/0/execute/tools"
    assert EffectKey.node_of(EffectKey("r", "tools", 1, "2").text, "r") == "tools"

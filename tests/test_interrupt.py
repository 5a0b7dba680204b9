"""Human in the loop: an `interrupt` node stops the run with a typed request; resume answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from loomgraph import Agent
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime


class Approval(BaseModel):
    approved: bool
    note: str = ""


GRAPH = """
name: review
entry: draft
state:
  draft: {type: str}
  decision: {type: 'tests.test_interrupt:Approval'}
nodes:
  draft: {kind: llm, prompt: 'Draft a reply to {{ input }}', output: draft}
  ask:
    kind: interrupt
    request: 'tests.test_interrupt:Approval'
    message: 'Send this? {{ draft }}'
    output: decision
  send: {kind: llm, prompt: 'Send {{ draft }} with note {{ decision.note }}', output: output}
edges:
  - {from: draft, to: ask}
  - {from: ask, to: send, when: decision.approved}
  - {from: ask, to: END}
  - {from: send, to: END}
"""


async def test_interrupt_and_resume_with_a_typed_value(tmp_path: Path) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    model = ScriptedModel(["Dear Ann, yes.", "sent"])
    agent = Agent("x", model=model, runtime=runtime, architecture=graph_from_yaml(GRAPH))
    first = await agent.run("Ann's mail")
    assert first.status == "interrupted"
    assert first.pending is not None and first.pending.node == "ask"
    assert first.pending.message == "Send this? Dear Ann, yes."
    assert first.pending.schema["properties"]["approved"]["type"] == "boolean"

    with pytest.raises(ResumeError, match="approved"):
        await agent.resume(first.run_id, value={"note": "no verdict"})
    assert (await runtime.load_run(first.run_id)).status == "interrupted"  # type: ignore[union-attr]

    done = await agent.resume(first.run_id, value={"approved": True, "note": "ok"})
    assert done.status == "completed" and done.output == "sent"
    history = await agent.history(first.run_id)
    assert [c.node for c in history] == ["", "draft", "ask", "send"]  # draft ran once
    assert history[2].state["decision"] == {"approved": True, "note": "ok"}
    assert done.turns == 2
    with pytest.raises(ResumeError, match="not waiting"):
        await agent.resume(first.run_id, value={"approved": False})
    await runtime.close()


def test_an_interrupt_without_a_request_type_is_invalid() -> None:
    bad = GRAPH.replace("    request: 'tests.test_interrupt:Approval'\n", "")
    with pytest.raises(GraphValidationError) as err:
        graph_from_yaml(bad)
    assert "bad-params" in err.value.rules and "request" in str(err.value)

"""A user writing their own strategies (graphs in YAML and Python): what a probe found (each
test failed before its fix). The steps and types the graphs name live in
tests/user_graph_steps.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import user_graph_steps as support
from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.models import ScriptedModel
from loomgraph.runtime.sqlite import SqliteRuntime

# ----------------------------------------------------------------- crash safety

SLASHED = """
name: mailer
state:
  ok: {type: bool, default: false}
entry: "mail/send"
nodes:
  "mail/send": {kind: function, call: "user_graph_steps:send", writes: [output]}
  confirm: {kind: interrupt, request: bool, output: ok, message: "Was it right to send?"}
edges:
  - {from: "mail/send", to: confirm}
  - {from: confirm, to: END}
"""


async def test_a_node_named_with_a_slash_does_not_run_again_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user names a node `mail/send` (it loads: only control characters are refused), runs
    it, and answers the interrupt after it. The resume treats every transition of `mail/send`
    as a child graph's (`checkpoints.is_top_level` splits node names on `/`), so it rebuilds
    the state without them and starts again at the entry: the e-mail is sent twice and the
    journal holds two transitions of `mail/send` visit 1. Expected: such a name is refused at
    load (`bad-name`), or the finished node never runs again."""
    ledger = tmp_path / "ledger"
    monkeypatch.setenv(support.LEDGER, str(ledger))
    try:
        graph = graph_from_yaml(SLASHED)
    except GraphValidationError as err:  # refusing the name is a fix too
        assert "mail/send" in str(err)
        return
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent("x", model=ScriptedModel([]), architecture=graph, runtime=runtime)
    stopped = await agent.run("send the report")
    assert stopped.status == "interrupted"
    done = await agent.resume(stopped.run_id, value=True)
    assert done.status == "completed"
    sends = [t.node for t in await runtime.transitions(done.run_id) if t.node == "mail/send"]
    await runtime.close()
    assert ledger.read_text().count("sent") == 1, "the e-mail was sent again by the resume"
    assert sends == ["mail/send"]

"""A user writing their own strategies (graphs in YAML and Python): what a probe found (each
test failed before its fix). The steps and types the graphs name live in
tests/user_graph_steps.py.
"""

from __future__ import annotations

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import NodeError
from loomgraph.models import ScriptedModel
from loomgraph.testing import run_node

# ----------------------------------------------------------------- testing helpers

ROUTED = """
name: routed
entry: call
nodes:
  call: {kind: function, call: "user_graph_steps:boom", writes: [output], on_error: sorry}
  sorry: {kind: function, call: "user_graph_steps:apologise", reads: [error],
          writes: [output]}
edges:
  - {from: call, to: END}
  - {from: sorry, to: END}
"""


async def test_run_node_follows_on_error_as_a_run_does() -> None:
    """A user unit-tests a node with `on_error: sorry` through `loomgraph.testing.run_node`,
    which docs/testing.md says runs the node "as a run's step does" ("what is not retried
    raises, as it fails the run"). A run routes the failure to `sorry` with the `error`
    patch, but `run_node` raises the node's ValueError, so the route cannot be tested and
    `run.next` never names the handler. Expected: the NodeRun a run's step would give:
    patch `{"error": {...}}`, next `sorry`."""
    whole = await Agent("x", model=ScriptedModel([]), architecture=graph_from_yaml(ROUTED)).run(
        "go"
    )
    assert whole.output == "sorry: the service said no"  # what a real run does
    try:
        run = await run_node(graph_from_yaml(ROUTED), "call", {"input": "go"})
    except ValueError as err:
        pytest.fail(f"run_node raised what a run routes to on_error: {err!r}")
    assert run.next == "sorry"
    assert run.patch["error"]["type"] == "ValueError"
    assert run.patch["error"]["message"] == "the service said no"
    assert run.kinds() == ["error"] and run.events[0].payload["type"] == "ValueError"
    assert run.state["error"] == run.patch["error"]


PLAIN = """
name: plain
entry: call
nodes:
  call: {kind: function, call: "user_graph_steps:boom", writes: [output]}
edges:
  - {from: call, to: END}
"""


async def test_run_node_without_on_error_still_raises() -> None:
    """A node without `on_error` fails the run: `run_node` raises the node's error."""
    with pytest.raises(ValueError, match="the service said no"):
        await run_node(graph_from_yaml(PLAIN), "call", {"input": "go"})


EXITS = ROUTED.replace("user_graph_steps:boom", "user_graph_steps:exits")


async def test_a_node_exiting_is_routed_as_a_run_routes_it() -> None:
    """A node raising SystemExit: a run routes it to `on_error` (its type in `error`), and
    so does `run_node` (it let the SystemExit through, ending the test's process)."""
    whole = await Agent("x", model=ScriptedModel([]), architecture=graph_from_yaml(EXITS)).run("go")
    assert whole.output == "sorry: 3"
    run = await run_node(graph_from_yaml(EXITS), "call", {"input": "go"})
    assert (run.next, run.patch["error"]["type"]) == ("sorry", "SystemExit")


async def test_a_node_exiting_without_on_error_fails_as_a_run_fails() -> None:
    """Without `on_error` a run fails with a NodeError naming the node; `run_node` raises it."""
    plain = PLAIN.replace("user_graph_steps:boom", "user_graph_steps:exits")
    whole = await Agent("x", model=ScriptedModel([]), architecture=graph_from_yaml(plain)).run("go")
    assert whole.status.value == "failed" and "call" in whole.reason
    with pytest.raises(NodeError, match="call") as err:
        await run_node(graph_from_yaml(plain), "call", {"input": "go"})
    assert isinstance(err.value.__cause__, SystemExit)

"""A user writing their own strategies (graphs in YAML and Python): what a probe found (each
test failed before its fix). The steps and types the graphs name live in
tests/user_graph_steps.py.
"""

from __future__ import annotations

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.models import ScriptedModel

# ----------------------------------------------------------------- unclear errors

NOTE = """
name: noted
entry: note
nodes:
  note: {kind: function, call: "user_graph_steps:note", writes: [messages]}
  answer: {kind: model}
edges:
  - {from: note, to: answer}
  - {from: answer, to: END}
"""


async def test_a_patch_putting_a_non_message_into_messages_fails_the_node() -> None:
    """A user's function node adds a note to the conversation the way `append` reads
    ("add an item"): `{"messages": "note: ..."}`. Node patches to the built-in `messages`
    are not checked (it is typed `any`), so the string is journaled into the conversation,
    the run is journaled `completed`, and then `agent.run` raises a bare
    `AttributeError: 'str' object has no attribute 'get'` (from `run_memory.episode_of`).
    Expected: the node fails with a StateError naming it and `messages`, as a patch that
    breaks a declared field's type does (and as `run_node` refuses such a state)."""
    agent = Agent("x", model=ScriptedModel(["ok"]), architecture=graph_from_yaml(NOTE))
    try:
        result = await agent.run("hello")
    except AttributeError as err:
        pytest.fail(f"agent.run raised a bare AttributeError: {err}")
    assert result.status == "failed"
    assert "'note'" in result.reason and "messages" in result.reason


SCORED = """
name: scored
state:
  score: {type: "int | None", reducer: add, default: 1}
entry: a
nodes:
  a: {kind: function, call: "user_graph_steps:no_score", writes: [score]}
edges:
  - {from: a, to: END}
"""


async def test_none_into_an_add_field_that_allows_none_is_named() -> None:
    """A user declares `score: {type: "int | None", reducer: add}` (accepted at load) and a
    node writes `None`, which the type allows. The reducer computes `1 + None` and the run
    fails with `node 'a' failed: TypeError: unsupported operand type(s) for +: 'int' and
    'NoneType'`, naming neither the field nor the reducer. Expected: the type is refused at
    load for `add`, or None adds nothing, or the failure names the field `score`."""
    try:
        graph = graph_from_yaml(SCORED)
    except GraphValidationError as err:  # refusing `add` on an optional type is a fix too
        assert "score" in str(err)
        return
    result = await Agent("x", model=ScriptedModel([]), architecture=graph).run("go")
    if result.status == "completed":
        return  # None added nothing: a fix too
    assert "'score'" in result.reason, f"the failure does not name the field: {result.reason}"


FLOATS = """
name: floats
entry: grow
state:
  total: {type: float, reducer: add, default: 1.0e+308}
nodes:
  grow: {kind: function, call: "user_graph_steps:grow_total", writes: [total]}
edges:
  - {from: grow, to: END}
"""


async def test_a_sum_that_overflows_to_infinity_is_named() -> None:
    """`add` of two large floats overflowed to `inf`, which the state kept though typed
    fields refuse infinity (the journal has none); the failure was blamed on a later node."""
    agent = Agent("x", model=ScriptedModel([]), architecture=graph_from_yaml(FLOATS))
    result = await agent.run("go")
    assert result.status == "failed"
    assert "'total'" in result.reason and "not a finite number" in result.reason


def test_the_hint_for_a_float_default_reads_as_a_number_in_yaml() -> None:
    """`default: 1e+308` is text to YAML; the hint said "write it as 1e+308", the same text."""
    with pytest.raises(GraphValidationError, match=r"write it as 1\.0e\+308"):
        graph_from_yaml(FLOATS.replace("1.0e+308", "1e+308"))

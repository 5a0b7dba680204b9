"""A user writing their own strategies (graphs in YAML and Python): what a probe found (each
test failed before its fix). The steps and types the graphs name live in
tests/user_graph_steps.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import Undefined
from jinja2.exceptions import SecurityError

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.graph.conditions import compile_condition, compile_template
from loomgraph.models import ScriptedModel

CART = """
name: shop
state:
  cart: {type: "user_graph_steps:Cart"}
entry: fill
nodes:
  fill: {kind: function, call: "user_graph_steps:empty_cart", writes: [cart]}
  checkout: {kind: function, call: "user_graph_steps:checkout", writes: [output]}
  nothing: {kind: function, call: "user_graph_steps:nothing_to_buy", writes: [output]}
edges:
  - {from: fill, to: checkout, when: "cart.items"}
  - {from: fill, to: nothing}
  - {from: checkout, to: END}
  - {from: nothing, to: END}
"""


async def test_a_condition_on_a_model_field_named_items_reads_the_field() -> None:
    """A user types a field with a pydantic model `Cart(items: list[str])` and routes on
    `when: "cart.items"`, as the docs write `plan.steps`. The state keeps the model as a
    dict, and Jinja's attribute lookup finds the dict's method `items` before the key: the
    condition is a bound method, always true, so an empty cart goes to checkout (and
    `{{ cart.items }}` in a prompt renders `<built-in method items of dict object ...>`).
    Expected: `cart.items` is the field (or the graph is refused at load)."""
    try:
        graph = graph_from_yaml(CART)
    except GraphValidationError as err:  # refusing the ambiguous name is a fix too
        assert "items" in str(err)
        return
    agent = Agent("x", model=ScriptedModel([]), architecture=graph)
    result = await agent.run("buy")
    assert result.status == "completed", result.reason
    assert result.output == "empty", "an empty cart was routed to checkout"


CART_SCOPE: dict[str, Any] = {
    "cart": {"items": [], "count": 0, "values": "v", "keys": "k", "get": "g"},
    "plain": {"a": 1},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("cart.items", []),  # compiled to closures
        ("cart.items | join(',') == ''", True),  # left to Jinja (a filter wanting context)
        ("cart.items if cart.items else 'none'", "none"),  # left to Jinja
        ("cart.values ~ cart.keys ~ cart.get", "vkg"),
        ("plain.items() | list", [("a", 1)]),  # a dict without such a key keeps its methods
        ("plain.get('a')", 1),
    ],
)
def test_a_dict_key_named_like_a_dict_method_is_the_key(source: str, expected: Any) -> None:
    """Both forms of a condition (closures, Jinja's compiled expression) read the key."""
    assert compile_condition(source)(**CART_SCOPE) == expected


def test_a_template_renders_the_field_not_the_method() -> None:
    """`{{ cart.items }}` in a prompt rendered `<built-in method items of dict object ...>`."""
    render = compile_template("{{ cart.items }} {{ cart.count }} {{ cart.values }}")
    assert render({"cart": {"items": ["tea"], "count": 1, "values": 2}}) == "['tea'] 1 2"


def test_a_key_opens_nothing_the_sandbox_refuses() -> None:
    """A key is data: what it holds is still looked into through the sandbox's checks."""
    for source in ("cart.items.__class__", "cart.items.append"):
        assert isinstance(compile_condition(source)(**CART_SCOPE), Undefined)
    for source in ("cart.items.__class__.__mro__", "cart.items.append(1)"):
        with pytest.raises(SecurityError):
            compile_condition(source)(**CART_SCOPE)

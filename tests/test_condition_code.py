"""Conditions compiled to closures answer exactly as Jinja's sandbox does, errors included."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2.exceptions import SecurityError

from loomgraph.graph.condition_code import compile_native
from loomgraph.graph.conditions import compile_condition, environment

SCOPE: dict[str, Any] = {
    "last_message": {"tool_calls": [1], "content": "hi"},
    "rounds": 2,
    "notes": [1],
    "agreement": 0.7,
    "ready": True,
    "x": 1,
    "y": None,
    "visits": {"replan": 1},
    "a": 2,
    "d": {"k": 1, "keys": 5},
    "input": "x",
    "messages": [],
    "items": ["a", "b"],
    "s": "ABC",
    "state": {"agreement": 1},
}

NATIVE = [
    "last_message.tool_calls | length > 0",
    "rounds < 3 and notes | length < 10",
    "agreement >= 0.6",
    "ready",
    "last_message.content",
    "last_message.missing",
    "x is defined",
    "nope is not defined",
    "y is none",
    "visits.replan < 3",
    "1 < a < 3",
    "3 < a < 1",
    "a in [1, 2]",
    "'k' not in d",
    "d['k'] + 1",
    "d.keys",
    "d.k",
    "not ready",
    "-a * 2 // 3 % 5",
    "(a, 1) == (2, 1)",
    "a / 0",
    "missing | length",
    "missing > 1",
    "s | lower == 'abc'",
    "x is divisibleby(1)",
    "s is string and a is number",
    "input.__class__",
    "input.__class__.__mro__",
    "messages.append",
    "state.agreement",
    "true and none",
]
# Calls, slices, `**`, `~`, conditional expressions, context filters: left to Jinja.
JINJA = [
    "items | join(',')",
    "range(3) | list",
    "a ~ s",
    "a if ready else s",
    "a ** 2",
    "items[1:]",
    "d.items()",
    "messages.append(1)",
    "input.__class__.__mro__[1].__subclasses__()",
]


def _outcome(test: Any) -> tuple[str, Any]:
    try:
        return "value", repr(test(**SCOPE))
    except Exception as err:
        return "error", type(err).__name__


@pytest.mark.parametrize("source", NATIVE)
def test_a_compiled_condition_answers_as_jinja_does(source: str) -> None:
    env = environment()
    native = compile_native(env, source)
    assert native is not None
    jinja = env.compile_expression(source, undefined_to_none=False)
    assert _outcome(native) == _outcome(jinja)
    assert _outcome(compile_condition(source)) == _outcome(jinja)


@pytest.mark.parametrize("source", JINJA)
def test_other_nodes_stay_with_jinja(source: str) -> None:
    assert compile_native(environment(), source) is None
    env = environment()
    assert _outcome(compile_condition(source)) == _outcome(env.compile_expression(source))


def test_private_names_are_refused_by_the_compiled_form_too() -> None:
    with pytest.raises(SecurityError):
        compile_condition("input.__class__.__mro__")(**SCOPE)

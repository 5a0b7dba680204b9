"""Two findings of a probe.

1. `ScriptedModel` refuses a dict turn it cannot read (an unknown key such as `tool_call` or
   `txt`, a tool call without `tool`, a value of the wrong type) with `ScriptTurnInvalid`,
   naming the turn's index, the key and the keys allowed: when it is built from a list, and
   when a script function returns such a turn. Every documented turn shape still plays.
2. A tool parameter whose default is None (`c: int = None`) is `int | None`: its schema says
   null is accepted, and a call that sends null gets it.
"""

from __future__ import annotations

import json
import pickle
from typing import Annotated, Any, Literal

import pytest
from pydantic import AfterValidator, Field

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel, Turn
from loomgraph.models.errors import ModelConfigError, ScriptTurnInvalid
from loomgraph.protocols import ModelRequest, Usage
from loomgraph.testing import run_node
from loomgraph.tools import ToolRegistry

TURN_KEYS = ("text", "tool_calls", "usage", "finish_reason")
CALL_KEYS = ("id", "tool", "args")

added: list[tuple[int, int]] = []


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    added.append((a, b))
    return a + b


# ------------------------------------------------------------------ 1. ScriptedModel's turns

MISSPELT = [
    ([{"tool_call": [{"tool": "add", "args": {"a": 1, "b": 2}}]}, "done"], 0, "tool_call"),
    ([{"txt": "hello"}], 0, "txt"),
    (["hi", {"text": "x", "usage": {}, "finish": "end_turn"}], 1, "finish"),
]


@pytest.mark.parametrize(("turns", "index", "key"), MISSPELT, ids=[k for _, _, k in MISSPELT])
def test_an_unknown_turn_key_is_refused_when_the_model_is_built(
    turns: list[Any], index: int, key: str
) -> None:
    with pytest.raises(ScriptTurnInvalid) as info:
        ScriptedModel(turns)
    error = info.value
    assert (error.index, error.key, error.allowed) == (index, key, TURN_KEYS)
    assert f"turn {index}" in str(error) and f"unknown key {key!r}" in str(error)
    assert "text, tool_calls, usage, finish_reason" in str(error)
    # A bad-configuration error callers may catch as a ValueError or as a model's.
    assert isinstance(error, ValueError) and isinstance(error, ModelConfigError)


def test_a_near_miss_is_named() -> None:
    with pytest.raises(ScriptTurnInvalid, match="did you mean 'tool_calls'"):
        ScriptedModel([{"tool_call": []}])


def test_an_unknown_tool_call_key_is_refused_not_called_with_no_arguments() -> None:
    turns: list[Any] = ["hi", {"tool_calls": [{"tool": "add", "arg": {"a": 1, "b": 2}}]}, "done"]
    with pytest.raises(ScriptTurnInvalid) as info:
        ScriptedModel(turns)
    error = info.value
    assert (error.index, error.key, error.allowed) == (1, "arg", CALL_KEYS)
    assert "turn 1" in str(error) and "tool call 0" in str(error)
    assert "unknown key 'arg'" in str(error) and "id, tool, args" in str(error)


def test_a_tool_call_without_a_tool_is_a_typed_error_not_a_key_error() -> None:
    with pytest.raises(ScriptTurnInvalid) as info:
        ScriptedModel([{"tool_calls": [{"name": "add", "args": {}}]}])
    error = info.value
    assert not isinstance(error, KeyError)
    assert (error.index, error.key, error.allowed) == (0, "name", CALL_KEYS)
    assert "unknown key 'name'" in str(error) and "no 'tool'" in str(error)
    with pytest.raises(ScriptTurnInvalid, match="no 'tool'") as missing:
        ScriptedModel([{"tool_calls": [{"args": {}}]}])
    assert missing.value.key == "tool"


WRONG_TYPES = [
    (5, None, "a turn is"),
    (None, None, "a turn is"),
    (int, None, "a turn is"),
    ({"text": 5}, "text", "'text' is int"),
    ({"tool_calls": "add"}, "tool_calls", "'tool_calls' is str"),
    ({"tool_calls": ["add"]}, "tool_calls", "tool call 0 is str"),
    ({"tool_calls": [{"tool": "add", "args": [1, 2]}]}, "args", "'args' is list"),
    ({"text": "x", "finish_reason": 1}, "finish_reason", "'finish_reason' is int"),
    ({"text": "x", "usage": {"input_token": 3}}, "usage", "unknown usage key"),
    ({"text": "x", "usage": {"input_tokens": -1}}, "usage", "input_tokens"),
    ({"text": "x", "usage": 7}, "usage", "'usage' is int"),
]


@pytest.mark.parametrize(("turn", "key", "words"), WRONG_TYPES, ids=[w for _, _, w in WRONG_TYPES])
def test_a_turn_value_of_the_wrong_type_is_refused(turn: Any, key: str | None, words: str) -> None:
    with pytest.raises(ScriptTurnInvalid) as info:
        ScriptedModel(["first", turn])
    assert info.value.index == 1 and info.value.key == key
    assert "turn 1" in str(info.value) and words in str(info.value)


def request(call_index: int) -> ModelRequest:
    return ModelRequest(messages=[], run_id="r1", call_index=call_index)


def test_a_script_function_returning_a_bad_turn_is_refused_naming_the_call() -> None:
    model = ScriptedModel(lambda r: "ok" if r.call_index == 0 else {"txt": "late"})
    assert model.turn_for(request(0)).text == "ok"
    with pytest.raises(ScriptTurnInvalid) as info:
        model.turn_for(request(2))
    assert (info.value.index, info.value.key) == (2, "txt")
    assert "turn 2" in str(info.value) and "unknown key 'txt'" in str(info.value)


async def test_a_run_on_a_bad_script_function_fails_naming_the_error() -> None:
    model = ScriptedModel(lambda r: {"tool_call": [{"tool": "add", "args": {"a": 1, "b": 2}}]})
    result = await Agent("x", model=model, tools=[add]).run("go")
    assert result.status == "failed"
    assert "ScriptTurnInvalid" in result.reason and "'tool_call'" in result.reason


async def test_run_node_refuses_a_bad_turn_before_running() -> None:
    state = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ScriptTurnInvalid, match="no 'tool'"):
        await run_node(
            "react", "model", state, model=[{"text": "x", "tool_calls": [{"name": "a"}]}]
        )


def test_the_error_survives_pickling() -> None:
    with pytest.raises(ScriptTurnInvalid) as info:
        ScriptedModel([{"txt": "x"}])
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.index, copy.key, copy.allowed, str(copy)) == (
        0,
        "txt",
        TURN_KEYS,
        str(info.value),
    )


async def test_every_documented_turn_shape_still_plays() -> None:
    added.clear()
    usage = Usage(input_tokens=7, output_tokens=3)
    turns: list[Any] = [
        {"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]},
        {"text": "more", "tool_calls": [{"id": "mine", "tool": "add", "args": {"a": 3, "b": 4}}]},
        {"tool_calls": [{"id": None, "tool": "add", "args": {"a": 5, "b": 6}}], "usage": usage},
        {"tool_calls": ({"tool": "add", "args": {"a": 7, "b": 8}},), "usage": None},
        {"text": "", "usage": {"input_tokens": 1}, "finish_reason": "end_turn", "tool_calls": []},
    ]
    model = ScriptedModel(turns)
    played = [model.turn_for(request(i)) for i in range(len(turns))]
    assert [t.tool_calls[0]["id"] for t in played[:4]] == [
        "call_0_0",
        "mine",
        "call_2_0",
        "call_3_0",
    ]
    assert played[2].usage == usage and played[4].usage == Usage(input_tokens=1)
    assert played[4].finish_reason == "end_turn"
    result = await Agent("x", model=ScriptedModel([*turns[:4], "done"]), tools=[add]).run("go")
    assert result.status == "completed" and result.output == "done"
    assert added == [(1, 2), (3, 4), (5, 6), (7, 8)]


async def test_strings_turns_exceptions_and_functions_still_play() -> None:
    model = ScriptedModel(["a", Turn(text="b"), {}, ValueError("boom"), KeyError])
    assert [model.turn_for(request(i)).text for i in range(3)] == ["a", "b", ""]
    with pytest.raises(ValueError, match="boom"):
        model.turn_for(request(3))
    with pytest.raises(KeyError):
        model.turn_for(request(4))
    functional = ScriptedModel(lambda r: Turn(text="t") if r.call_index else "s")
    assert [functional.turn_for(request(i)).text for i in (0, 1)] == ["s", "t"]
    raising = ScriptedModel(lambda r: RuntimeError("down"))
    with pytest.raises(RuntimeError, match="down"):
        raising.turn_for(request(0))


# ------------------------------------------------------- 2. a parameter defaulting to None


@tool
def implicit(a: int, c: int = None) -> str:  # type: ignore[assignment]  # noqa: RUF013
    """Implicit optional.

    Args:
        a: first
        c: maybe a count
    """
    return json.dumps([a, c])


@tool
def explicit(a: int, c: int | None = None) -> str:
    """Explicit optional.

    Args:
        a: first
        c: maybe a count
    """
    return json.dumps([a, c])


def schema_of(fn: Any) -> dict[str, Any]:
    (spec,) = ToolRegistry([fn]).specs()
    parameters: dict[str, Any] = spec["parameters"]
    return parameters


async def call(fn: Any, args: dict[str, Any]) -> Any:
    result = await ToolRegistry([fn]).call(
        {"id": "c1", "tool": fn.name, "args": args}, idempotency_key="k1"
    )
    return result


def test_a_parameter_defaulting_to_none_is_advertised_as_nullable() -> None:
    shown = schema_of(implicit)["properties"]["c"]
    assert shown == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "default": None,
        "description": "maybe a count",
    }
    assert shown == schema_of(explicit)["properties"]["c"]
    assert schema_of(implicit)["required"] == ["a"]


async def test_a_parameter_defaulting_to_none_accepts_none() -> None:
    sent = await call(implicit, {"a": 1, "c": None})
    assert not sent.get("is_error") and sent["content"] == "[1, null]"
    left_out = await call(implicit, {"a": 1})
    assert not left_out.get("is_error") and left_out["content"] == "[1, null]"
    given = await call(implicit, {"a": 1, "c": 2})
    assert given["content"] == "[1, 2]"
    wrong = await call(implicit, {"a": 1, "c": "two"})
    assert wrong["is_error"] and wrong["error_type"] == "invalid_arguments"


QUERY = Annotated[str, AfterValidator(str.upper), Field(description="query", min_length=2)]


@tool
def constrained(
    q: QUERY = None,  # type: ignore[assignment]
    n: int = Field(None, description="a number", ge=0),  # type: ignore[assignment]
) -> str:
    """Constraints and validators apply to the value, not to None."""
    return json.dumps([q, n])


async def test_constraints_and_validators_keep_to_the_non_null_value() -> None:
    properties = schema_of(constrained)["properties"]
    assert properties["q"] == {
        "anyOf": [{"minLength": 2, "type": "string"}, {"type": "null"}],
        "default": None,
        "description": "query",
    }
    assert properties["n"] == {
        "anyOf": [{"minimum": 0, "type": "integer"}, {"type": "null"}],
        "default": None,
        "description": "a number",
    }
    nulls = await call(constrained, {"q": None, "n": None})
    assert not nulls.get("is_error") and nulls["content"] == "[null, null]"
    values = await call(constrained, {"q": "ab", "n": 3})
    assert values["content"] == '["AB", 3]'
    short = await call(constrained, {"q": "a"})
    assert short["is_error"] and "- q:" in short["content"]
    negative = await call(constrained, {"n": -1})
    assert negative["is_error"] and "- n:" in negative["content"]


@tool
def nullable_already(  # type: ignore[no-untyped-def]
    a: Any = None,
    b=None,  # no hint: any JSON value
    c: int | None = None,
    d: Literal["x", None] = None,
    e: object = None,
    f: int = 3,
) -> str:
    """Types that take None already, and a default that is not None."""
    return "ok"


def test_types_that_take_none_and_other_defaults_are_left_alone() -> None:
    properties = schema_of(nullable_already)["properties"]
    assert properties["a"] == {"default": None}
    assert properties["b"] == {"default": None}
    assert properties["c"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert properties["d"] == {"default": None, "enum": ["x", None]}
    assert properties["e"] == {"default": None}
    assert properties["f"] == {"default": 3, "type": "integer"}


@pytest.mark.parametrize("turns", ["done", b"done", {"text": "done"}])
def test_one_turn_not_in_a_list_is_refused_not_played_per_character(turns: Any) -> None:
    with pytest.raises(ScriptTurnInvalid, match=r"list of turns") as raised:
        ScriptedModel(turns)
    assert "ScriptedModel([" in str(raised.value)


async def usage_of(model: ScriptedModel, max_tokens: int | None) -> Any:
    req = ModelRequest(messages=[], run_id="r1", call_index=0, max_tokens=max_tokens)
    (usage,) = [c["usage"] async for c in model.stream(req) if c["type"] == "usage"]
    return usage


async def test_the_default_usage_bills_no_more_output_than_max_tokens_as_a_provider() -> None:
    # A budget that fitted a call to a cap of 4 output tokens saw the fake spend 5.
    assert (await usage_of(ScriptedModel(["x"]), 4)).output_tokens == 4
    assert (await usage_of(ScriptedModel(["x"]), None)).output_tokens == 5
    assert (await usage_of(ScriptedModel(["x"]), 4096)).output_tokens == 5
    # A usage the script gives is reported as given: a test of a provider billing past it.
    told = ScriptedModel([{"text": "x", "usage": {"output_tokens": 9}}])
    assert (await usage_of(told, 4)).output_tokens == 9

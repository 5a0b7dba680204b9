"""A tool's schema is strict JSON, checked once at definition: a default JSON cannot carry
(inf, NaN, bytes that are not UTF-8, ...) is a typed error naming the tool and the parameter,
never a schema that makes every model request of the agent fail."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from fake_servers import FakeServer, Reply, chat_stream
from loomgraph import Agent, tool
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.tools import Tool, ToolDefaultInvalid
from loomgraph.tools.schema import DefaultProblem
from loomgraph.tools.schema_defs import ToolSchemaNotJSON, spec_chars


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def _define(annotation: Any, default: Any) -> Tool[..., Any]:
    """A tool `probe(value: annotation = default)` (no annotation for None)."""

    def probe(value):  # type: ignore[no-untyped-def]  # typed below, per case
        """Probe a value."""
        return value

    probe.__defaults__ = (default,)
    probe.__annotations__ = {} if annotation is None else {"value": annotation}
    return tool(probe)


def _strict(value: Any) -> str:
    """`value` as the strict JSON a model API takes (raises for anything else)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    return text


# ------------------------------------------------------------- the findings


async def test_an_infinite_float_default_does_not_break_every_model_request(
    server: FakeServer,
) -> None:
    try:

        @tool
        def scale(x: float, limit: float = float("inf")) -> float:
            """Scale a value, up to a limit."""
            return min(x, limit)

    except ValueError as exc:  # refused at definition, naming the parameter
        assert "limit" in str(exc)
        return
    server.add(Reply(events=chat_stream(["no tool needed"])))
    model = OpenAICompatModel(
        "m", base_url=server.url + "/v1", retry_policy=RetryPolicy(max_retries=0)
    )
    agent = Agent("x", model=model, tools=[scale])
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "completed", result.reason


def test_a_bytes_default_that_is_not_utf8_is_a_clear_definition_error() -> None:
    def sign(payload: bytes = b"\xff\xfe") -> str:
        """Sign a payload."""
        return "signed"

    with pytest.raises(ToolDefaultInvalid) as info:
        tool(sign)
    assert (info.value.tool, info.value.parameter) == ("sign", "payload")
    assert info.value.kind is DefaultProblem.NOT_JSON
    assert "'sign'" in str(info.value) and "'payload'" in str(info.value)


# ------------------------------------------------------------- one check for every default


class Ceiling(enum.Enum):
    NONE = math.inf


@pytest.mark.parametrize(
    ("annotation", "default", "said"),
    [
        (float, math.inf, "inf is not a JSON number"),
        (float, -math.inf, "-inf is not a JSON number"),
        (float, math.nan, "nan is not a JSON number"),
        (None, math.inf, "inf is not a JSON number"),  # no hint: any JSON value
        (Any, math.nan, "nan is not a JSON number"),
        # pydantic writes these as null: the model would be shown null, the call gets inf
        (tuple[float, ...], (1.0, math.inf), "inf at [1]"),
        (dict[str, float], {"cap": math.inf}, "inf at cap"),
        (str, "rapport-\udce9t\udce9", "lone surrogate"),
        (int, 10**5000, "more than"),
        (bytes, b"\x89PNG\xff", "UnicodeDecodeError"),
        (Any, b"\xff", "UnicodeDecodeError"),
        (Any, {"\udcff": 1}, "UnicodeEncodeError"),
    ],
    ids=[
        "inf",
        "-inf",
        "nan",
        "untyped-inf",
        "any-nan",
        "tuple-inf",
        "dict-inf",
        "surrogate",
        "huge-int",
        "bytes",
        "any-bytes",
        "surrogate-key",
    ],
)
def test_a_default_json_cannot_carry_is_refused_naming_tool_and_parameter(
    annotation: Any, default: Any, said: str
) -> None:
    with pytest.raises(ToolDefaultInvalid) as info:
        _define(annotation, default)
    refused = info.value
    assert (refused.tool, refused.parameter, refused.kind) == (
        "probe",
        "value",
        DefaultProblem.NOT_JSON,
    )
    assert refused.default is default
    assert said in str(refused)
    assert "JSON cannot carry" in str(refused)


def test_a_default_its_type_refuses_is_still_named_so() -> None:
    with pytest.raises(ToolDefaultInvalid) as info:
        _define(Annotated[int, Field(ge=1)], 0)
    assert info.value.kind is DefaultProblem.TYPE
    assert "its own type refuses" in str(info.value)


class Window(BaseModel):
    width: float = math.nan


@pytest.mark.parametrize(
    ("annotation", "default", "where"),
    [
        (Annotated[float, Field(examples=[math.inf])], 1.0, "properties.value.examples[0]"),
        (Annotated[float, Field(json_schema_extra={"x": math.nan})], 1.0, "properties.value.x"),
        (Window | None, None, "properties.value.anyOf[0].properties.width.default"),
        (Ceiling | None, None, "properties.value.anyOf[0].enum[0]"),  # the type, not a default
    ],
)
def test_other_parts_of_a_parameters_schema_json_cannot_carry_are_refused(
    annotation: Any, default: Any, where: str
) -> None:
    with pytest.raises(ToolSchemaNotJSON) as info:
        _define(annotation, default)
    assert (info.value.tool, info.value.parameter) == ("probe", "value")
    assert f"parameters.{where}" in str(info.value)


def test_a_from_schema_tool_with_nan_in_its_schema_is_refused() -> None:
    schema = {"type": "object", "properties": {"ratio": {"type": "number", "default": math.nan}}}
    with pytest.raises(ToolSchemaNotJSON) as info:
        Tool.from_schema("resize", "Resize.", schema, lambda ratio=1.0: ratio)
    assert info.value.tool == "resize"
    assert info.value.path == ("parameters", "properties", "ratio", "default")


def test_a_description_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ToolSchemaNotJSON) as info:
        Tool.from_schema("ls", "List \udce9.", {"type": "object"}, lambda: "")
    assert info.value.path == ("description",)
    assert "lone surrogate" in str(info.value)


def test_spec_chars_counts_strict_json_and_refuses_the_rest() -> None:
    spec: Any = {"name": "t", "description": "d", "parameters": {"type": "object"}}
    assert spec_chars(spec) == len(_strict({k: spec[k] for k in spec}))
    spec["parameters"] = {"type": "object", "x": {1, 2}}
    with pytest.raises(ToolSchemaNotJSON) as info:
        spec_chars(spec)
    assert info.value.path == ("parameters", "x") and "a set" in str(info.value)


# ------------------------------------------------------------- the invariant

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # inf and NaN included
    | st.text()
    | st.binary(max_size=8)
    | st.just("\udcff")
    | st.builds(lambda: 10**5000)  # built: hypothesis cannot repr it in the strategy
)
DEFAULTS = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(default=DEFAULTS)
@example(default=math.inf)
@example(default=[1.0, {"a": math.nan}])
@example(default=frozenset({1, 2}))
@example(default=b"report.txt")
def test_a_defined_tools_spec_is_always_strict_json(default: Any) -> None:
    try:
        item = _define(Any, default)
    except ToolDefaultInvalid as refused:
        assert (refused.parameter, refused.kind) == ("value", DefaultProblem.NOT_JSON)
        return
    text = _strict(item.spec)
    shown = json.loads(text)["parameters"]["properties"]["value"].get("default")
    assert shown == json.loads(_strict(shown))  # what the model is shown reads back the same

"""What a tool's definition shows the model and lets it set: partials, methods, `**kwargs`,
positional-only `from_schema` tools, optional contexts, aliases, docstrings, schema size;
and what a call makes of odd exceptions and return values."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, Optional

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field, create_model

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ToolResult
from loomgraph.tools import Tool, ToolContext, ToolRegistry, to_content, tool
from loomgraph.tools.mcp import MCPServer
from loomgraph.tools.schema_defs import MAX_TOOL_CHARS


async def run(host: ToolRegistry, name: str, args: dict[str, Any]) -> ToolResult:
    return await host.call({"id": "c1", "tool": name, "args": args}, idempotency_key="k1")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            elif key not in ("default", "enum", "const", "examples"):
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# ----------------------------------------------------------------- functools.partial


def search(query: str, api_key: str, limit: int = 5) -> str:
    """Search the index.

    Args:
        query: What to look for.
        api_key: The secret key.
        limit: Most results.
    """
    return f"{query}|{api_key}|{limit}"


async def test_arguments_bound_by_a_partial_are_hidden_and_refused() -> None:
    bound = tool(functools.partial(search, api_key="sk-SECRET-123"))
    shown = json.dumps(bound.spec)
    assert "api_key" not in shown and "sk-SECRET-123" not in shown
    assert set(bound.parameters["properties"]) == {"query", "limit"}
    host = ToolRegistry([bound])
    assert (await run(host, "search", {"query": "q"}))["content"] == "q|sk-SECRET-123|5"
    forged = await run(host, "search", {"query": "q", "api_key": "attacker"})
    assert forged["is_error"] and forged["error_type"] == "invalid_arguments"
    assert "api_key" in forged["content"] and "attacker" not in forged["content"]


async def test_a_partial_keyword_cannot_come_in_through_kwargs_or_from_schema() -> None:
    def call_api(path: str, token: str = "", **extra: str) -> str:
        """Call the API."""
        return f"{path}|{token}|{sorted(extra)}"

    kw = tool(functools.partial(call_api, token="T0K"), name="call_api")
    host = ToolRegistry([kw])
    assert (await run(host, "call_api", {"path": "/a", "x": "1"}))["content"] == "/a|T0K|['x']"
    forged = await run(host, "call_api", {"path": "/a", "token": "mine"})
    assert forged["error_type"] == "invalid_arguments" and "token" in forged["content"]

    schema = {"type": "object", "properties": {"path": {"type": "string"}}}
    given = Tool.from_schema("api2", "Call.", schema, functools.partial(call_api, token="T0K"))
    host2 = ToolRegistry([given])
    assert (await run(host2, "api2", {"path": "/b"}))["content"] == "/b|T0K|[]"
    forged2 = await run(host2, "api2", {"path": "/b", "token": "mine"})
    assert forged2["error_type"] == "invalid_arguments" and "token" in forged2["content"]


# ----------------------------------------------------------------- from_schema, positional


async def test_from_schema_positional_only_left_out_takes_its_default() -> None:
    def transfer(amount: int = 0, to: str = "savings", /) -> str:
        return f"amount={amount!r} to={to!r}"

    schema = {
        "type": "object",
        "properties": {"amount": {"type": "integer"}, "to": {"type": "string"}},
        "additionalProperties": False,
    }
    host = ToolRegistry([Tool.from_schema("transfer", "Move money.", schema, transfer)])
    assert (await run(host, "transfer", {"to": "checking"}))["content"] == (
        "amount=0 to='checking'"
    )
    assert (await run(host, "transfer", {"amount": 5}))["content"] == "amount=5 to='savings'"
    assert (await run(host, "transfer", {}))["content"] == "amount=0 to='savings'"


async def test_from_schema_positional_only_gap_without_default_is_refused() -> None:
    ran: list[object] = []

    def pair(a: int, b: int = 2, /) -> str:
        ran.append((a, b))
        return "ran"

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {}}}
    host = ToolRegistry([Tool.from_schema("pair", "Pair.", schema, pair)])
    result = await run(host, "pair", {"b": 7})
    assert result["error_type"] == "invalid_arguments" and "- a: missing" in result["content"]
    assert ran == []


# ----------------------------------------------------------------- **kwargs: T


async def test_typed_kwargs_are_validated_and_described() -> None:
    def configure(name: str, **options: int) -> str:
        """Set options.

        Args:
            name: The thing.
            **options: Integer options.
        """
        return ";".join(f"{k}={v!r}" for k, v in sorted(options.items()))

    t = tool(configure)
    assert t.parameters["additionalProperties"] == {
        "type": "integer",
        "description": "Integer options.",
    }
    host = ToolRegistry([t])
    assert (await run(host, "configure", {"name": "x", "depth": "3"}))["content"] == "depth=3"
    bad = await run(host, "configure", {"name": "x", "retries": "three", "d": {"n": True}})
    assert bad["error_type"] == "invalid_arguments"
    assert "- retries: Input should be a valid integer" in bad["content"]
    assert "- d: Input should be a valid integer" in bad["content"]


def test_untyped_kwargs_stay_open_with_their_description() -> None:
    def free(**rest: Any) -> str:
        """Anything.

        Args:
            **rest: Whatever you like.
        """
        return ""

    assert tool(free).parameters["additionalProperties"] == {"description": "Whatever you like."}


# ----------------------------------------------------------------- methods


def test_a_tool_decorated_in_a_class_body_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"'lookup'.*'self'.*tool\(obj\.lookup\)"):

        class Service:
            @tool
            def lookup(self, q: str) -> str:
                """Look up q."""
                return q


async def test_a_bound_method_is_a_tool_without_self() -> None:
    class Service:
        prefix = "svc"

        def lookup(self, q: str) -> str:
            """Look up q."""
            return f"{self.prefix}:{q}"

        @classmethod
        def kind(cls, q: str) -> str:
            """Class method."""
            return cls.__name__ + q

    with pytest.raises(TypeError, match="'self'"):
        tool(Service.lookup)
    bound = tool(Service().lookup)
    assert bound.parameters["properties"] == {"q": {"type": "string"}}
    host = ToolRegistry([bound, Service.kind])
    assert (await run(host, "lookup", {"q": "x"}))["content"] == "svc:x"
    assert (await run(host, "kind", {"q": "x"}))["content"] == "Servicex"


# ----------------------------------------------------------------- exceptions as text


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str broke")


class StrNotString(Exception):
    def __str__(self) -> str:
        return 503  # type: ignore[return-value]


@pytest.mark.parametrize("exc_type", [StrRaises, StrNotString])
@pytest.mark.parametrize("is_async", [False, True])
async def test_an_exception_that_cannot_be_shown_is_still_an_error_result(
    exc_type: type[Exception], is_async: bool
) -> None:
    def boom() -> str:
        """Fail."""
        raise exc_type()

    async def aboom() -> str:
        """Fail."""
        raise exc_type()

    host = ToolRegistry([tool(aboom if is_async else boom, name="boom")])
    result = await run(host, "boom", {})
    assert result["is_error"] and result["error_type"] == "tool_exception"
    assert result["content"].startswith(f"{exc_type.__name__}: ")


async def test_an_unshowable_exception_does_not_fail_the_run() -> None:
    @tool
    def fetch(url: str) -> str:
        """Fetch a URL."""
        raise StrNotString()

    seen: list[dict[str, Any]] = []

    def turn(request: Any) -> Any:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "fetch", "args": {"url": "u"}}]}
        seen.extend(m for m in request.messages if m["role"] == "tool")
        return "done"

    agent = Agent(
        "x", model=ScriptedModel(turn), tools=[fetch], permissions=StandardPermissions(allow=["*"])
    )
    result = await agent.run("go")
    assert result.status == "completed", result.reason
    assert len(seen) == 1 and "StrNotString" in json.dumps(seen[0])


# ----------------------------------------------------------------- optional ToolContext


@pytest.mark.parametrize("optional", ["union", "optional"])
async def test_an_optional_tool_context_is_injected(optional: str) -> None:
    def union(q: str, ctx: ToolContext | None = None) -> str:
        """Union."""
        return f"{type(ctx).__name__}:{ctx.tool if ctx else None}"

    def opt(q: str, ctx: Optional[ToolContext] = None) -> str:  # noqa: UP045 - the point
        """Optional."""
        return f"{type(ctx).__name__}:{ctx.tool if ctx else None}"

    t = tool(union if optional == "union" else opt, name="t")
    assert set(t.parameters["properties"]) == {"q"}
    host = ToolRegistry([t])
    assert (await run(host, "t", {"q": "x"}))["content"] == "ToolContext:t"
    forged = await run(host, "t", {"q": "x", "ctx": {"tool": "y"}})
    assert forged["error_type"] == "invalid_arguments"


def test_a_type_without_json_schema_names_the_tool_and_parameter() -> None:
    def apply(n: int, cb: Callable[[int], int]) -> int:
        """Apply."""
        return cb(n)

    with pytest.raises(TypeError, match=r"tool 'apply': parameter 'cb'"):
        tool(apply)


# ----------------------------------------------------------------- docstrings


def g_first_line(city: str) -> str:
    """Args:
    city: The city.
    """
    return city


def g_next_line(city: str) -> str:
    """
    Args:
        city: The city.
    """
    return city


def g_with_returns(city: str, days: int) -> str:
    """Args:
        city: The city.
        days: How many.

    Returns:
        The forecast.
    """
    return city


@pytest.mark.parametrize("fn", [g_first_line, g_next_line, g_with_returns])
def test_a_docstring_that_opens_with_args_keeps_the_descriptions(fn: Any) -> None:
    t = tool(fn)
    assert t.description == ""
    assert t.parameters["properties"]["city"]["description"] == "The city."


# ----------------------------------------------------------------- return values


class Color(enum.Enum):
    RED = "red"


class Painted(BaseModel):
    color: Color
    when: dt.datetime


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Color.RED, "red"),
        ([Color.RED], ["red"]),
        ({1, 2}, [1, 2]),
        (frozenset([3]), [3]),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2024-01-02T03:04:05Z"),
        (b"hi", "hi"),
        (math.nan, None),
        ({"x": math.inf, "y": -math.inf}, {"x": None, "y": None}),
        ({(1, 2): "a", 3: "b"}, {"1,2": "a", "3": "b"}),
        (
            {"p": Painted(color=Color.RED, when=dt.datetime(2024, 1, 2))},
            {"p": {"color": "red", "when": "2024-01-02T00:00:00"}},
        ),
    ],
)
def test_return_values_become_json_as_pydantic_writes_them(value: Any, expected: Any) -> None:
    def strict(text: str) -> Any:
        def no_constants(name: str) -> Any:
            raise ValueError(f"not JSON: {name}")

        return json.loads(text, parse_constant=no_constants)

    assert strict(to_content(value)) == expected
    # The same as inside a model.
    boxed = create_model("Boxed", v=(Any, ...))
    assert strict(to_content(value)) == strict(boxed(v=value).model_dump_json())["v"]


async def test_a_value_that_cannot_be_made_text_says_the_tool_ran() -> None:
    ran: list[int] = []

    def loop() -> object:
        """Return a cycle."""
        ran.append(1)
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        return cyclic

    result = await run(ToolRegistry([loop]), "loop", {})
    assert ran == [1]
    assert result["is_error"] and result["error_type"] == "tool_exception"
    assert "ran and returned" in result["content"]


async def test_an_object_whose_str_fails_is_shown_by_its_repr() -> None:
    class Odd:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            return "<Odd>"

    def odd() -> object:
        """Odd."""
        return {"o": Odd()}

    result = await run(ToolRegistry([odd]), "odd", {})
    assert result == {"content": '{"o": "<Odd>"}', "is_error": False}


# ----------------------------------------------------------------- generators


class GenCall:
    def __call__(self, q: str) -> Iterator[str]:
        yield q


class AsyncGenCall:
    async def __call__(self, q: str) -> Any:
        yield q


@pytest.mark.parametrize("obj", [GenCall(), AsyncGenCall()])
def test_a_callable_object_whose_call_is_a_generator_is_refused(obj: Any) -> None:
    with pytest.raises(TypeError, match="generator functions cannot be tools"):
        tool(obj, name="gen")


# ----------------------------------------------------------------- schema size and $defs


def _dag(levels: int) -> Any:
    """Models of 2 fields of the model below, `levels` deep (an address used twice, ...)."""
    made: list[Any] = [create_model("L0", v=(int, ...))]
    for i in range(1, levels):
        made.append(create_model(f"L{i}", left=(made[-1], ...), right=(made[-1], ...)))
    return made[-1]


Deep = _dag(15)


def test_definitions_used_many_times_stay_defs_when_inlining_would_explode() -> None:
    def record(x: Deep) -> str:  # type: ignore[valid-type]
        """Record."""
        return ""

    params = tool(record).parameters
    assert len(json.dumps(params)) < 5_000  # inlined, it was 2.7 MB
    assert set(_refs(params)) <= {f"#/$defs/{name}" for name in params["$defs"]}
    Draft202012Validator.check_schema(params)
    leaf = {"v": 1}
    value: dict[str, Any] = leaf
    for _ in range(14):
        value = {"left": value, "right": value}
    Draft202012Validator(params).validate({"x": value})


class Place(BaseModel):
    city: str


def test_small_nested_models_are_still_inlined() -> None:
    def go(home: Place, work: Place) -> str:
        """Go."""
        return ""

    params = tool(go).parameters
    assert "$defs" not in params and not list(_refs(params))


class Cat(BaseModel):
    kind: Literal["cat"]
    meow: int


class Dog(BaseModel):
    kind: Literal["dog"]
    bark: int


def test_a_discriminated_union_leaves_no_dangling_ref() -> None:
    def pet(p: Annotated[Cat | Dog, Field(discriminator="kind")]) -> str:
        """Pet."""
        return ""

    params = tool(pet).parameters
    assert "$defs" not in params and not list(_refs(params))
    assert params["properties"]["p"]["discriminator"] == {"propertyName": "kind"}
    validator = Draft202012Validator(params)
    assert validator.is_valid({"p": {"kind": "cat", "meow": 1}})
    assert not validator.is_valid({"p": {"kind": "cat", "bark": 1}})


def test_a_tool_past_the_size_cap_is_refused_when_defined() -> None:
    def big(q: str) -> str:
        """Big."""
        return q

    with pytest.raises(ValueError, match=r"tool 'big'.*50,000"):
        tool(big, description="x" * MAX_TOOL_CHARS)
    assert MCPServer.max_tool_chars == MAX_TOOL_CHARS


# ----------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    "field",
    [Field(alias="userId"), Field(validation_alias="userId"), Field(serialization_alias="u")],
)
def test_a_field_alias_is_refused_naming_the_parameter(field: Any) -> None:
    def f(user_id: str) -> str:
        """Aliases."""
        return user_id

    f.__annotations__["user_id"] = Annotated[str, field]
    with pytest.raises(TypeError, match=r"tool 'f': parameter 'user_id' sets Field\("):
        tool(f)


def test_a_field_default_with_an_alias_is_refused() -> None:
    def f(n: int = Field(3, alias="count")) -> str:
        """Alias in the default."""
        return str(n)

    with pytest.raises(TypeError, match=r"parameter 'n' sets Field\(alias="):
        tool(f)

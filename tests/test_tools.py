"""Tests of loomgraph.tools: specs from signatures, the registry, and call results."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import threading
from typing import Annotated, Any

import pydantic
import pytest
from pydantic import BaseModel, Field

from loomgraph.protocols import ToolCall, ToolHost, ToolResult, ToolSpec
from loomgraph.tools import Tool, ToolRegistry, as_tool_host, to_content, tool

# Types used in tool signatures live at module level: with postponed annotations the
# hints are resolved from the function's module globals.


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    """A place on Earth."""

    city: str
    country: str = "FR"


class Query(BaseModel):
    place: Place
    hours: list[int] = Field(default_factory=list)


class Strict(BaseModel):
    code: str

    @pydantic.field_validator("code")
    @classmethod
    def known(cls, value: str) -> str:
        if value != "ok":
            raise LookupError(f"unknown code {value!r}")  # not a ValueError: pydantic re-raises
        return value


class Tree(BaseModel):
    value: int
    children: list[Tree] = Field(default_factory=list)


def forecast(
    query: Query,
    unit: Unit | None = None,
    days: int = 3,
    tags: list[str] = ["a"],  # noqa: B006 - the default must show up in the schema
    note: str | None = None,
) -> str:
    """Forecast the weather
    for a place.

    Uses the national service.

    Args:
        query: What to forecast.
        unit (Unit): Temperature unit;
            None for the local one.
        days: How many days ahead.

    Returns:
        The forecast as text.
    """
    return "sunny"


def call_of(name: str, args: Any = None, **extra: Any) -> ToolCall:
    call: dict[str, Any] = {"id": "c1", "tool": name, "args": {} if args is None else args}
    call.update(extra)
    return call  # type: ignore[return-value]


async def run(host: ToolHost, name: str, args: Any = None, key: str = "k-1") -> ToolResult:
    return await host.call(call_of(name, args), idempotency_key=key)


# --------------------------------------------------------------------------- the decorator


def test_bare_decorator_makes_a_tool_that_still_calls_the_function() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert isinstance(add, Tool)
    assert add(2, 3) == 5
    assert add.name == "add"
    assert add.description == "Add two numbers."
    assert add.spec["destructive"] is False
    assert add.timeout is None
    assert not add.is_async


async def test_decorator_with_keywords_overrides_name_description_and_flags() -> None:
    @tool(name="rm-file", description="Delete a file.", destructive=True, timeout=5)
    async def remove_file(path: str) -> str:
        """Ignored docstring."""
        return path

    assert remove_file.is_async
    assert await remove_file("x") == "x"
    spec = remove_file.spec
    assert spec["name"] == "rm-file"
    assert spec["description"] == "Delete a file."
    assert spec["destructive"] is True
    assert remove_file.timeout == 5.0
    assert set(spec) == {"name", "description", "parameters", "destructive"}


def test_tool_can_be_called_as_a_function() -> None:
    wrapped = tool(forecast, name="weather")
    assert wrapped.name == "weather"
    assert wrapped.fn is forecast


def test_bad_tool_definitions_are_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        tool(lambda x: x)
    with pytest.raises(ValueError, match="invalid tool name 'has space'"):
        tool(forecast, name="has space")
    with pytest.raises(TypeError, match="must be a function"):
        tool(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        tool(forecast, timeout=0)
    for description in (5, ["a"]):  # kept as given before, and sent to the model so
        with pytest.raises(TypeError, match="'forecast': description must be text"):
            tool(forecast, description=description)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="generator"):

        @tool
        def gen() -> Any:
            yield 1


def test_unresolvable_type_hint_is_a_clear_error() -> None:
    def broken(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        """Broken."""

    with pytest.raises(TypeError, match=r"'broken'.*cannot resolve the type hints"):
        tool(broken)


# --------------------------------------------------------------------------- schemas


def test_schema_covers_nested_models_enums_optionals_lists_and_defaults() -> None:
    params = tool(forecast).parameters
    assert params["type"] == "object"
    assert params["required"] == ["query"]
    props = params["properties"]
    assert list(props) == ["query", "unit", "days", "tags", "note"]

    # Nested models are inlined, with their own required fields and defaults.
    query = props["query"]
    assert query["type"] == "object"
    assert query["required"] == ["place"]
    assert query["properties"]["place"]["properties"]["country"] == {
        "type": "string",
        "default": "FR",
    }
    assert query["properties"]["hours"]["items"] == {"type": "integer"}

    # Optional enum: the enum values, or null, defaulting to null.
    unit = props["unit"]
    assert {"enum": ["celsius", "fahrenheit"], "type": "string"} in unit["anyOf"]
    assert {"type": "null"} in unit["anyOf"]
    assert unit["default"] is None

    assert props["days"]["type"] == "integer"
    assert props["days"]["default"] == 3
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": ["a"]}
    assert {"type": "string"} in props["note"]["anyOf"]

    # No references left to resolve and no noise titles.
    text = json.dumps(params)
    assert "$ref" not in text
    assert "$defs" not in params
    assert '"title"' not in text


def test_recursive_models_keep_their_definition() -> None:
    def grow(tree: Tree) -> int:
        """Count the nodes."""
        return 1

    params = tool(grow).parameters
    assert params["properties"]["tree"]["properties"]["children"]["items"] == {
        "$ref": "#/$defs/Tree"
    }
    assert params["$defs"]["Tree"]["required"] == ["value"]


def test_a_property_named_title_is_kept() -> None:
    def publish(title: str, body: str = "") -> str:
        """Publish a post."""
        return title

    params = tool(publish).parameters
    assert params["properties"]["title"] == {"type": "string"}
    assert params["required"] == ["title"]


def test_descriptions_come_from_the_docstring() -> None:
    spec = tool(forecast).spec
    # Only the first paragraph, joined into one line.
    assert spec["description"] == "Forecast the weather for a place."
    props = spec["parameters"]["properties"]
    assert props["query"]["description"] == "What to forecast."
    assert props["unit"]["description"] == "Temperature unit; None for the local one."
    assert props["days"]["description"] == "How many days ahead."
    assert "description" not in props["tags"]  # not documented
    assert "Returns" not in json.dumps(spec)


def test_annotated_field_descriptions_win_over_the_docstring() -> None:
    def search(
        text: Annotated[str, Field(description="Words to look for.")],
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
        page: int = Field(1, description="Page number."),
    ) -> list[str]:
        """Search the index.

        Args:
            text: Overridden by the annotation.
            limit: At most this many hits.
        """
        return [text] * limit * page

    props = tool(search).parameters["properties"]
    assert props["text"]["description"] == "Words to look for."
    assert props["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "default": 10,
        "description": "At most this many hits.",
    }
    assert props["page"] == {"type": "integer", "default": 1, "description": "Page number."}


def test_function_without_parameters_or_docstring() -> None:
    def ping() -> str:
        return "pong"

    spec = tool(ping).spec
    assert spec["description"] == ""
    assert spec["parameters"]["type"] == "object"
    assert spec["parameters"]["properties"] == {}
    assert "required" not in spec["parameters"]


async def test_parameter_names_that_clash_with_pydantic_still_work() -> None:
    def odd(json: str, model_config: int, schema: bool = False) -> dict[str, Any]:
        """Odd names."""
        return {"json": json, "model_config": model_config, "schema": schema}

    host = ToolRegistry([odd])
    props = host.specs()[0]["parameters"]["properties"]
    assert list(props) == ["json", "model_config", "schema"]
    result = await run(host, "odd", {"json": "j", "model_config": 2})
    assert json.loads(result["content"]) == {"json": "j", "model_config": 2, "schema": False}


# --------------------------------------------------------------------------- idempotency keys


async def test_idempotency_key_is_injected_and_hidden_from_the_model() -> None:
    seen: list[str] = []

    @tool
    async def charge(amount: int, idempotency_key: str) -> str:
        """Charge a card."""
        seen.append(idempotency_key)
        return f"charged {amount}"

    params = charge.parameters
    assert "idempotency_key" not in params["properties"]
    assert params["required"] == ["amount"]
    assert charge.wants_key

    host = ToolRegistry([charge])
    result = await run(host, "charge", {"amount": 5}, key="run-7:step-3")
    assert result == {"content": "charged 5", "is_error": False}
    assert seen == ["run-7:step-3"]

    # The model cannot supply the key itself.
    spoof = await run(host, "charge", {"amount": 5, "idempotency_key": "mine"})
    assert spoof["is_error"] and spoof["error_type"] == "invalid_arguments"
    assert "idempotency_key: unexpected argument" in spoof["content"]
    assert seen == ["run-7:step-3"]


async def test_tools_without_the_parameter_do_not_receive_the_key() -> None:
    def echo(**kwargs: Any) -> dict[str, Any]:
        """Echo the arguments."""
        return kwargs

    host = ToolRegistry([echo])
    assert not host.get("echo").wants_key  # type: ignore[union-attr]
    result = await run(host, "echo", {"a": 1, "idempotency_key": "spoofed"})
    assert json.loads(result["content"]) == {"a": 1}


# --------------------------------------------------------------------------- results


async def test_sync_and_async_tools_run_and_results_become_text() -> None:
    def positional(a: int, /, b: int = 2) -> int:
        """Positional-only parameters are passed by position."""
        return a * 10 + b

    async def model() -> Place:
        """A pydantic model."""
        return Place(city="Lyon")

    def nested() -> dict[str, Any]:
        """Models inside containers, and values JSON cannot encode."""
        return {"places": [Place(city="Nice")], "when": dt.date(2024, 5, 1), "ok": True}

    host = ToolRegistry([positional, model, nested])
    assert await run(host, "positional", {"a": "4"}) == {"content": "42", "is_error": False}
    assert (await run(host, "model"))["content"] == '{"city":"Lyon","country":"FR"}'
    assert json.loads((await run(host, "nested"))["content"]) == {
        "places": [{"city": "Nice", "country": "FR"}],
        "when": "2024-05-01",
        "ok": True,
    }


def test_to_content_conversions() -> None:
    assert to_content("plain text") == "plain text"
    assert to_content({"a": [1, 2.5, None]}) == '{"a": [1, 2.5, null]}'
    assert to_content([True, False]) == "[true, false]"
    assert to_content(None) == "null"
    assert to_content(7) == "7"
    assert to_content("héllo") == "héllo"
    assert to_content({"s": "héllo"}) == '{"s": "héllo"}'
    assert to_content(Place(city="Paris")) == '{"city":"Paris","country":"FR"}'


async def test_no_args_is_treated_as_an_empty_object() -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    host = ToolRegistry([ping])
    call: ToolCall = {"id": "1", "tool": "ping", "args": None}  # type: ignore[typeddict-item]
    assert (await host.call(call, idempotency_key="k"))["content"] == "pong"


# --------------------------------------------------------------------------- error results


async def test_unknown_tool_lists_the_available_tools() -> None:
    host = ToolRegistry([forecast, tool(forecast, name="other")])
    result = await run(host, "weather")
    assert result["is_error"] is True
    assert result["error_type"] == "unknown_tool"
    assert result["content"] == "Unknown tool 'weather'. Available tools: forecast, other."

    empty = await run(ToolRegistry(), "weather")
    assert empty["error_type"] == "unknown_tool"
    assert "No tools are available" in empty["content"]


@pytest.mark.parametrize("call", ["forecast", None, ["forecast"]])
async def test_a_call_that_is_no_mapping_is_an_error_result_not_an_exception(call: Any) -> None:
    # `call()` never raises for a problem of the call: a bare AttributeError came out.
    result = await ToolRegistry([forecast]).call(call, idempotency_key="k")
    assert result["is_error"] is True and result["error_type"] == "unknown_tool"
    assert "a tool call is a mapping" in result["content"], result


async def test_invalid_arguments_list_every_bad_field() -> None:
    host = ToolRegistry([forecast])
    result = await run(
        host,
        "forecast",
        {"query": {"place": {}, "hours": [1, "x"]}, "days": "many", "colour": "red"},
    )
    assert result["is_error"] is True
    assert result["error_type"] == "invalid_arguments"
    lines = result["content"].splitlines()
    assert lines[0] == "Invalid arguments for tool 'forecast':"
    assert "- query.place.city: Field required" in lines
    assert any(ln.startswith("- query.hours[1]: Input should be a valid integer") for ln in lines)
    assert any(
        ln.startswith("- days: Input should be a valid integer") and "(got 'many')" in ln
        for ln in lines
    )
    assert "- colour: unexpected argument; this tool has no such parameter" in lines
    assert len(lines) == 5


async def test_validators_raising_other_exceptions_are_invalid_arguments() -> None:
    def check(item: Strict) -> str:
        """Check a code."""
        return item.code

    host = ToolRegistry([check])
    assert (await run(host, "check", {"item": {"code": "ok"}}))["content"] == "ok"
    result = await run(host, "check", {"item": {"code": "zz"}})
    assert result["error_type"] == "invalid_arguments"
    assert result["content"] == (
        "Invalid arguments for tool 'check': LookupError: unknown code 'zz'"
    )


async def test_enum_values_are_validated() -> None:
    host = ToolRegistry([forecast])
    result = await run(host, "forecast", {"query": {"place": {"city": "X"}}, "unit": "kelvin"})
    assert result["error_type"] == "invalid_arguments"
    assert "- unit: Input should be 'celsius' or 'fahrenheit' (got 'kelvin')" in result["content"]


async def test_arguments_that_are_not_an_object() -> None:
    host = ToolRegistry([forecast])
    for args, kind in ([1, 2], "array"), ("text", "string"), (3, "number"):
        result = await run(host, "forecast", args)
        assert result["error_type"] == "invalid_arguments"
        assert result["content"] == (
            "Invalid arguments for tool 'forecast': expected a JSON object of named "
            f"arguments, got {kind}."
        )


async def test_tool_exceptions_become_error_results() -> None:
    def explode(what: str) -> str:
        """Fail."""
        raise ValueError(f"cannot {what}")

    async def bare() -> None:
        """Fail without a message."""
        raise KeyError

    async def own_timeout() -> None:
        """A TimeoutError of the tool's own is an exception, not our timeout."""
        raise TimeoutError("upstream took too long")

    def unserialisable() -> Any:
        """A result JSON cannot hold."""
        loop: list[Any] = []
        loop.append(loop)
        return loop

    host = ToolRegistry([explode, bare, own_timeout, unserialisable])
    result = await run(host, "explode", {"what": "fly"})
    assert result == {
        "content": "ValueError: cannot fly",
        "is_error": True,
        "error_type": "tool_exception",
    }
    assert (await run(host, "bare"))["content"] == "KeyError"
    own = await run(host, "own_timeout")
    assert own["error_type"] == "tool_exception"
    assert own["content"] == "TimeoutError: upstream took too long"
    bad = await run(host, "unserialisable")
    assert bad["error_type"] == "tool_exception"
    assert bad["content"].startswith("ValueError: Circular reference")


async def test_async_tool_timeout_per_tool_overrides_host_default() -> None:
    never = asyncio.Event()

    @tool(timeout=0.05)
    async def stuck() -> str:
        """Wait forever."""
        await never.wait()
        return "done"

    async def stuck_default() -> str:
        """Wait forever, under the host's default limit."""
        await never.wait()
        return "done"

    host = ToolRegistry([stuck, stuck_default], timeout=0.04)
    assert ToolRegistry().timeout == 60.0
    result = await run(host, "stuck")
    assert result == {
        "content": "Tool 'stuck' timed out after 0.05 seconds.",
        "is_error": True,
        "error_type": "timeout",
    }
    default = await run(host, "stuck_default")
    assert default["error_type"] == "timeout"
    assert default["content"] == "Tool 'stuck_default' timed out after 0.04 seconds."


async def test_sync_tool_timeout_leaves_the_thread_running() -> None:
    release = threading.Event()
    finished = threading.Event()

    @tool(timeout=0.05)
    def blocking() -> str:
        """Block until released."""
        release.wait(10)
        finished.set()
        return "done"

    result = await run(ToolRegistry([blocking]), "blocking")
    assert result["error_type"] == "timeout"
    assert "0.05 seconds" in result["content"]
    # The thread was abandoned, not killed: it finishes once released.
    assert not finished.is_set()
    release.set()
    assert await asyncio.to_thread(finished.wait, 10)


async def test_sync_tool_does_not_block_the_event_loop() -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()
    loop_thread = threading.get_ident()

    def blocking() -> dict[str, Any]:
        """Block until a task on the event loop releases us."""
        loop.call_soon_threadsafe(started.set)
        # If this ran on the loop, the releasing task could never run and this would fail.
        released = release.wait(5)
        return {"released": released, "other_thread": threading.get_ident() != loop_thread}

    async def releaser() -> None:
        await started.wait()
        release.set()

    host = ToolRegistry([blocking])
    result, _ = await asyncio.gather(run(host, "blocking"), releaser())
    assert json.loads(result["content"]) == {"released": True, "other_thread": True}


async def test_cancellation_propagates() -> None:
    never = asyncio.Event()
    entered = asyncio.Event()

    async def wait() -> None:
        """Wait forever."""
        entered.set()
        await never.wait()

    task = asyncio.create_task(run(ToolRegistry([wait]), "wait"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --------------------------------------------------------------------------- the registry


async def test_add_remove_names_and_duplicates() -> None:
    def a() -> str:
        """Tool a."""
        return "a"

    @tool(name="b")
    def b_impl() -> str:
        """Tool b."""
        return "b"

    host = ToolRegistry([a])
    added = host.add(b_impl)
    assert added is b_impl  # an existing Tool is registered as it is
    assert host.names() == ["a", "b"]
    assert [s["name"] for s in host.specs()] == ["a", "b"]
    assert "a" in host and len(host) == 2

    with pytest.raises(ValueError, match="'a' is already registered"):
        host.add(a)
    with pytest.raises(ValueError, match="'b'"):
        ToolRegistry([b_impl, tool(a, name="b")])

    host.remove("a")
    assert host.names() == ["b"]
    assert host.spec("a") is None
    assert [s["name"] for s in host.specs()] == ["b"]
    assert (await run(host, "a"))["error_type"] == "unknown_tool"
    with pytest.raises(KeyError, match="no tool named 'a'"):
        host.remove("a")


def test_spec_and_specs_return_copies() -> None:
    host = ToolRegistry([forecast])
    spec = host.spec("forecast")
    assert spec is not None and spec["name"] == "forecast"
    first: ToolSpec = host.specs()[0]
    first["name"] = "changed"
    spec["description"] = "changed"
    assert host.specs()[0]["name"] == "forecast"
    assert host.spec("forecast")["description"].startswith("Forecast")  # type: ignore[index]


async def test_validator_is_built_once_not_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    async def double(x: int) -> int:
        """Double x."""
        return 2 * x

    host = ToolRegistry([double])

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was built during a call")

    monkeypatch.setattr(pydantic, "create_model", forbidden)
    assert (await run(host, "double", {"x": 21}))["content"] == "42"


def test_as_tool_host_accepts_none_lists_and_hosts() -> None:
    empty = as_tool_host(None)
    assert isinstance(empty, ToolRegistry)
    assert empty.specs() == []

    from_list = as_tool_host([forecast, tool(forecast, name="other")])
    assert isinstance(from_list, ToolRegistry)
    assert [s["name"] for s in from_list.specs()] == ["forecast", "other"]
    assert ToolRegistry.as_tool_host((forecast,)).spec("forecast") is not None

    assert as_tool_host(from_list) is from_list

    class Remote:
        def specs(self) -> list[ToolSpec]:
            return []

        def spec(self, name: str) -> ToolSpec | None:
            return None

        async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
            return {"content": ""}

    remote = Remote()
    assert as_tool_host(remote) is remote


def test_as_tool_host_rejects_other_things() -> None:
    with pytest.raises(TypeError, match="got int"):
        as_tool_host(3)
    with pytest.raises(TypeError, match="got dict"):
        as_tool_host({"forecast": forecast})
    with pytest.raises(TypeError, match=r"wrap a single function in a list"):
        as_tool_host(forecast)
    with pytest.raises(TypeError, match="must be a function, got str"):
        as_tool_host(["forecast"])
    with pytest.raises(TypeError, match="got type"):
        as_tool_host(ToolRegistry)  # the class, not an instance

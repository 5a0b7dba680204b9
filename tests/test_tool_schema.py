"""Tools from a JSON Schema, injected context and dependencies, and docstrings of every style."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools import (
    Injected,
    MissingToolDependency,
    Tool,
    ToolContext,
    ToolRegistry,
    tool,
)
from loomgraph.tools.docstrings import Docstring, parse_docstring

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 3},
        "status": {"enum": ["open", "closed"]},
    },
    "required": ["query"],
    "additionalProperties": False,
}


async def test_from_schema_shows_the_schema_and_validates_with_it() -> None:
    seen: list[dict[str, Any]] = []

    def search(**kwargs: Any) -> str:
        seen.append(kwargs)
        return "3 tickets"

    item = Tool.from_schema("search_tickets", "Search tickets.", SCHEMA, search, egress=True)
    assert item.spec["parameters"] == SCHEMA
    assert item.spec["description"] == "Search tickets."
    assert item.spec["egress"] and not item.spec["destructive"]
    registry = ToolRegistry([item])
    good = await registry.call(
        {"id": "1", "tool": "search_tickets", "args": {"query": "printer", "status": "open"}},
        idempotency_key="k",
    )
    assert good == {"content": "3 tickets", "is_error": False}
    bad = await registry.call(
        {"id": "2", "tool": "search_tickets", "args": {"query": "x", "status": "lost", "n": 1}},
        idempotency_key="k",
    )
    assert bad["is_error"] and bad["error_type"] == "invalid_arguments"
    assert "query: 'x' is too short" in bad["content"]
    assert "status: 'lost' is not one of ['open', 'closed']" in bad["content"]
    assert "'n' was unexpected" in bad["content"]
    assert seen == [{"query": "printer", "status": "open"}]  # the bad call never ran


def test_from_schema_refuses_a_schema_that_is_not_one() -> None:
    with pytest.raises(ValueError, match=r"'broken'.*not a valid JSON Schema"):
        Tool.from_schema("broken", "x", {"type": "object", "properties": 3}, lambda: None)
    with pytest.raises(ValueError, match=r"'listy'.*object"):
        Tool.from_schema("listy", "x", {"type": "array"}, lambda: None)


async def test_from_schema_patterns_run_on_re2_within_the_calls_bound() -> None:
    # On Python's `re` this pattern took minutes on 41 characters, holding the event loop
    # past the tool's timeout; an MCP server's schemas were on RE2, this one was not.
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
    item = Tool.from_schema("codes", "Check a code.", schema, lambda code: "ok", timeout=1)
    registry = ToolRegistry([item])
    call = {"id": "1", "tool": "codes", "args": {"code": "a" * 41 + "!"}}
    refused = await asyncio.wait_for(registry.call(call, idempotency_key="k"), 10)
    assert refused["error_type"] == "invalid_arguments"
    assert "does not match '^(a+)+$'" in refused["content"], refused
    good = {"id": "2", "tool": "codes", "args": {"code": "aaaa"}}
    assert await registry.call(good, idempotency_key="k") == {"content": "ok", "is_error": False}


def test_from_schema_refuses_a_pattern_re2_cannot_run_when_made() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "(?=a)a"}}}
    with pytest.raises(ValueError, match=r"'look': its parameters `pattern` '\(\?=a\)a'.*safely"):
        Tool.from_schema("look", "x", schema, lambda x: x)


class Database:
    """A stand-in database handle."""

    def __init__(self) -> None:
        self.rows = {"A-1": "shipped"}


@tool
async def order_status(order_id: str, db: Annotated[Database, Injected], ctx: ToolContext) -> str:
    """Look an order up.

    Args:
        order_id: The order number.
    """
    await ctx.progress("querying", order=order_id)
    return f"{db.rows.get(order_id, 'unknown')} for {ctx.user_id} in {ctx.run_id}"


def test_injected_parameters_are_hidden_from_the_model() -> None:
    params = order_status.spec["parameters"]
    assert set(params["properties"]) == {"order_id"}
    assert params["properties"]["order_id"]["description"] == "The order number."


async def test_context_and_dependencies_are_filled_in_a_run() -> None:
    db = Database()
    model = ScriptedModel(
        [{"tool_calls": [{"tool": "order_status", "args": {"order_id": "A-1"}}]}, "done"]
    )
    agent = Agent(
        "x",
        model=model,
        tools=[order_status],
        tool_deps={"db": db},
        permissions=StandardPermissions(allow=["order_status"]),
    )
    events = [e async for e in agent.stream("where is A-1?", user_id="ann")]
    run_id = events[0].run_id
    (result,) = [e.payload["result"] for e in events if e.kind == "tool_result"]
    assert result["content"] == f"shipped for ann in {run_id}"
    (progress,) = [e.payload for e in events if e.kind == "tool_progress"]
    assert progress["message"] == "querying" and progress["order"] == "A-1"
    assert progress["tool"] == "order_status"
    # Keyed by type works as well.
    by_type = Agent("x", model=model, tools=[order_status], tool_deps={Database: db})
    assert by_type.deps.tools.spec("order_status") is not None


async def test_the_model_cannot_set_an_injected_parameter() -> None:
    registry = ToolRegistry([order_status], deps={"db": Database()})
    result = await registry.call(
        {"id": "1", "tool": "order_status", "args": {"order_id": "A-1", "db": "x"}},
        idempotency_key="k",
    )
    assert result["is_error"] and result["error_type"] == "invalid_arguments"


def test_a_missing_dependency_is_refused_when_the_agent_is_built() -> None:
    with pytest.raises(MissingToolDependency, match=r"'order_status'.*'db'.*has: none"):
        Agent("x", model="echo", tools=[order_status])


def test_from_schema_tools_get_context_and_key_too() -> None:
    def run(ctx: ToolContext, idempotency_key: str, **kwargs: Any) -> str:
        return f"{ctx.call_id} {idempotency_key} {kwargs}"

    item = Tool.from_schema("s", "d", SCHEMA, run)
    assert item.wants_key and [i.param for i in item.injected] == ["ctx"]


def google(city: str, days: int) -> None:
    """Forecast the weather.

    Args:
        city: The city.
        days (int): How many days
            ahead.
    """


def numpy_style(city: str, days: int) -> None:
    """Forecast the weather.

    Parameters
    ----------
    city : str
        The city.
    days : int
        How many days ahead.
    """


def sphinx(city: str, days: int) -> None:
    """Forecast the weather.

    :param city: The city.
    :param days: How many days ahead.
    """


def epydoc(city: str, days: int) -> None:
    """Forecast the weather.

    @param city: The city.
    @param days: How many days ahead.
    """


@pytest.mark.parametrize("fn", [google, numpy_style, sphinx, epydoc])
def test_docstring_styles_give_argument_descriptions(fn: Any) -> None:
    spec = Tool(fn).spec
    assert spec["description"] == "Forecast the weather."
    props = spec["parameters"]["properties"]
    assert props["city"]["description"] == "The city."
    assert props["days"]["description"] == "How many days ahead."


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
def test_a_one_line_docstring_reads_as_the_parser_reads_it(line: str) -> None:
    # A one-line docstring skips docstring-parser; the parser, given the same line as the
    # summary of a docstring with an argument section, reads the same description from it.
    if len(inspect.cleandoc(line).splitlines()) != 1:
        return
    if ":" in line or "@" in line:
        # No shortcut: a line with a section mark goes to the parser, whose reading of `:`
        # alone and of `:` over an argument section differ (its style detection).
        return
    with_section = f"{line}\n\nArgs:\n    x: y"
    assert parse_docstring(line).description == parse_docstring(with_section).description
    assert parse_docstring(line).args == {}


def test_a_tool_with_a_one_line_docstring_does_not_load_the_docstring_parser() -> None:
    code = (
        "import sys\n"
        "from loomgraph.tools import tool\n"
        "@tool\n"
        "def add(a: int, b: int) -> int:\n"
        "    '''Add two integers.'''\n"
        "    return a + b\n"
        "assert add.spec['description'] == 'Add two integers.', add.spec\n"
        "print('docstring_parser' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("doc", ["   ", "\n\n"])
def test_a_blank_docstring_describes_nothing(doc: str) -> None:
    assert parse_docstring(doc) == Docstring()

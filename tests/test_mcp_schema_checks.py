"""What a server's schemas cannot make loomgraph do: a `$ref` that loops (or a chain of them
too long to check) leaves its tool out when it is listed, instead of failing every call as
the model's `invalid_arguments`; and a result's structuredContent is checked against the
outputSchema on RE2 by loomgraph, never by the SDK with Python's `re` on the event loop.
Against the steered stdio server (tests/mcp_steered_server.py) and loomgraph's checker."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools.mcp.checks import Schema, check_arguments
from loomgraph.tools.mcp.schema_refs import REF_CHAIN
from mcp_steering import TRANSFER, control, received, server

ALLOW = StandardPermissions(allow=["*"])
LOGGER = "loomgraph.tools.mcp"


def calls(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": name, "args": args}]}


def results(events: list[Any]) -> list[dict[str, Any]]:
    return [e.payload["result"] for e in events if e.kind == "tool_result"]


def left_out(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if f"tool {name!r} is not offered" in r.getMessage()
    ]


async def run(state: Path, script: list[Any], **options: Any) -> tuple[list[Any], list[str]]:
    """The tool results of a scripted run against the steered server, and the names offered."""
    model = ScriptedModel(script)
    tools = [server(state, "s", **options)]
    async with Agent("x", model=model, tools=tools, permissions=ALLOW) as agent:
        events = [e async for e in agent.stream("go")]
        names = sorted(s["name"] for s in agent.deps.tools.specs())
    return results(events), names


def recurses(schema: dict[str, Any], instance: Any) -> bool:
    """Whether plain jsonschema runs out of stack checking `instance` (what the SDK and
    loomgraph's checker did before the listing looked at `$ref`s)."""
    try:
        list(Draft202012Validator(schema, registry=Registry()).iter_errors(instance))
    except RecursionError:
        return True
    return False


# ------------------------------------------------------------------ 1. $ref loops


async def test_a_ref_loop_leaves_its_tool_out_instead_of_failing_the_models_calls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    looped = {
        "name": "lookup",
        "description": "Look something up.",
        "inputSchema": {"type": "object", "properties": {"q": {"$ref": "#/properties/q"}}},
    }
    state = tmp_path / "s"
    control(state, [looped, TRANSFER])
    (result,), names = await run(state, [calls("lookup", {"q": "x"}), "done"])
    assert result.get("error_type") != "invalid_arguments", (
        f"a tool whose own schema loops ($ref to itself) fails every call as the model's "
        f"invalid_arguments: {result}"
    )
    assert names == ["transfer"] and result["error_type"] == "unknown_tool"
    (warning,) = left_out(caplog, "lookup")
    assert "'#/properties/q'" in warning and "properties.q.$ref" in warning
    assert "loops" in warning and "inputSchema" in warning
    assert received(state) == []  # never sent


LOOPS = {
    "itself": {"properties": {"q": {"$ref": "#/properties/q"}}},
    "root": {"$ref": "#", "properties": {"q": {"type": "string"}}},
    "each-other": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "properties": {"q": {"$ref": "#/$defs/a"}},
    },
    "all-of": {
        "$defs": {"a": {"allOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}},
        "properties": {"q": {"$ref": "#/$defs/a"}},
    },
    "any-of": {
        "$defs": {"a": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/a"}]}},
        "properties": {"q": {"$ref": "#/$defs/a"}},
    },
    "if-then": {
        "$defs": {"a": {"if": {"type": "string"}, "then": {"$ref": "#/$defs/a"}}},
        "properties": {"q": {"$ref": "#/$defs/a"}},
    },
    "dependent": {
        "dependentSchemas": {"q": {"$ref": "#"}},
        "properties": {"q": {"type": "string"}},
    },
    "by-id": {
        "$defs": {"a": {"$id": "urn:example:a", "allOf": [{"$ref": "urn:example:a"}]}},
        "properties": {"q": {"$ref": "urn:example:a"}},
    },
    "by-anchor": {
        "$defs": {"a": {"$anchor": "here", "oneOf": [{"$ref": "#here"}]}},
        "properties": {"q": {"$ref": "#here"}},
    },
    "dynamic": {
        "$defs": {"a": {"$dynamicAnchor": "node", "allOf": [{"$dynamicRef": "#node"}]}},
        "properties": {"q": {"$ref": "#/$defs/a"}},
    },
    "draft-07": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"a": {"$ref": "#/definitions/a"}},
        "properties": {"q": {"$ref": "#/definitions/a"}},
    },
}


@pytest.mark.parametrize("schema", LOOPS.values(), ids=LOOPS.keys())
def test_a_ref_that_loops_is_found_when_the_schema_is_read(schema: dict[str, Any]) -> None:
    source = {"type": "object", **schema}
    assert recurses(source, {"q": "x"})  # a real loop: checking never ends
    with pytest.raises(ValueError, match=r"^its inputSchema has a \$ref that loops: ") as caught:
        Schema(source)
    assert "without reading deeper into the arguments" in str(caught.value)


def chain(length: int) -> dict[str, Any]:
    """`q` checked against `length` schemas in a row, each a `$ref` to the next."""
    defs: dict[str, Any] = {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(length - 1)}
    defs[f"a{length - 1}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"q": {"$ref": "#/$defs/a0"}}}


def test_a_chain_of_refs_too_long_to_check_is_found_when_the_schema_is_read() -> None:
    assert recurses(chain(600), {"q": "x"})  # the flattest arguments run out of stack
    with pytest.raises(ValueError, match=f"more than {REF_CHAIN} schemas in a row"):
        Schema(chain(REF_CHAIN + 2))
    fits = Schema(chain(REF_CHAIN))
    assert check_arguments("t", {"q": "x"}, fits) is None
    bad = check_arguments("t", {"q": 1}, fits)
    assert bad is not None and bad["error_type"] == "invalid_arguments"


def nested(levels: int, make: Any) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = make(value)
    return value


def tree(step: str) -> dict[str, Any]:
    """A tree of nodes whose `children` are nodes (`items`), or (`allOf`) a node that is
    itself a node again: a loop that never reads deeper."""
    node: dict[str, Any] = {"type": "object"}
    if step == "items":
        node["properties"] = {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}
    else:
        node["allOf"] = [{"$ref": "#/$defs/node"}]
    return {"$defs": {"node": node}, "properties": {"q": {"$ref": "#/$defs/node"}}}


def dynamic_list(step: str) -> dict[str, Any]:
    """A list of lists (`items`: dynamic reference to itself), or one that is itself again."""
    a_list: dict[str, Any] = {"$dynamicAnchor": "item", "type": "array"}
    a_list[step] = {"$dynamicRef": "#item"} if step == "items" else [{"$dynamicRef": "#item"}]
    return {"$defs": {"list": a_list}, "properties": {"q": {"$ref": "#/$defs/list"}}}


def meta(step: str) -> dict[str, Any]:
    """A schema as its argument (`$ref` to the metaschema, which recurses deeper), and one
    that is also itself again."""
    to_meta = {"$ref": "https://json-schema.org/draft/2020-12/schema"}
    again = [{"$ref": "#/$defs/m"}] if step == "allOf" else []
    return {
        "$defs": {"m": {"allOf": [to_meta, *again]}},
        "properties": {"q": {"$ref": "#/$defs/m"}},
    }


def maps(step: str) -> dict[str, Any]:
    """A map of maps, or a map that is itself again."""
    return (
        {"additionalProperties": {"$ref": "#"}} if step == "items" else {"allOf": [{"$ref": "#"}]}
    )


RECURSIVE = [
    (tree, {"q": nested(30, lambda v: {"children": [v]})}, {"q": {"children": [{"children": 1}]}}),
    (maps, nested(60, lambda v: {"k": v}), {"k": {"j": 1}}),
    (dynamic_list, {"q": [[[[]]]]}, {"q": [[1]]}),
    (meta, {"q": {"properties": {"a": {"items": {"type": "string"}}}}}, {"q": {"type": 5}}),
]


@pytest.mark.parametrize(
    ("schema", "fits", "misfits"), RECURSIVE, ids=["tree", "maps", "dynamic", "meta"]
)
def test_recursion_is_refused_only_when_it_never_reads_deeper_into_the_arguments(
    schema: Any, fits: dict[str, Any], misfits: dict[str, Any]
) -> None:
    checked = Schema({"type": "object", **schema("items")})
    assert check_arguments("t", fits, checked) is None
    bad = check_arguments("t", misfits, checked)
    assert bad is not None and bad["error_type"] == "invalid_arguments", bad
    looped = {"type": "object", **schema("allOf")}
    assert recurses(looped, fits)
    with pytest.raises(ValueError, match="loops"):
        Schema(looped)


def test_running_out_of_stack_on_flat_arguments_is_the_schemas_fault() -> None:
    """What the listing may still miss: a check that runs out of stack on arguments of three
    levels or less is the schema's (`tool_exception`), on deeper ones the arguments'."""
    long_chain = Schema(chain(REF_CHAIN))  # 100-odd frames on `q`
    maps = Schema({"type": "object", "additionalProperties": {"$ref": "#"}})  # 10-odd a level

    def nearly_out_of_stack(frames: int, args: dict[str, Any], schema: Schema) -> Any:
        if frames > 0:
            return nearly_out_of_stack(frames - 1, args, schema)
        return check_arguments("t", args, schema)

    room = sys.getrecursionlimit() - 150  # (pytest's own frames: under 100)
    flat = nearly_out_of_stack(room, {"q": "x"}, long_chain)
    assert flat is not None and flat["error_type"] == "tool_exception", flat
    assert "runs out of stack" in flat["content"]
    deep = nearly_out_of_stack(room, nested(30, lambda v: {"k": v}), maps)
    assert deep is not None and deep["error_type"] == "invalid_arguments", deep
    assert "nested too deeply" in deep["content"]


# In-place steps (`$ref`, `allOf`) and a step one level into the arguments (`properties.p`)
# between up to four definitions: a graph with a loop of in-place steps is refused exactly
# when plain jsonschema runs out of stack on arguments as deep as the graph is large.
_DEF = st.fixed_dictionaries(
    {},
    optional={
        "ref": st.integers(0, 3),
        "all_of": st.lists(st.integers(0, 3), max_size=2),
        "deeper": st.integers(0, 3),
    },
)


def _graph(defs: list[dict[str, Any]]) -> dict[str, Any]:
    made: dict[str, Any] = {}
    for i, d in enumerate(defs):
        schema: dict[str, Any] = {"type": "object"}
        if "ref" in d:
            schema["$ref"] = f"#/$defs/d{d['ref'] % len(defs)}"
        if d.get("all_of"):
            schema["allOf"] = [{"$ref": f"#/$defs/d{j % len(defs)}"} for j in d["all_of"]]
        if "deeper" in d:
            schema["properties"] = {"p": {"$ref": f"#/$defs/d{d['deeper'] % len(defs)}"}}
        made[f"d{i}"] = schema
    return {"type": "object", "$defs": made, "$ref": "#/$defs/d0"}


@settings(max_examples=80, deadline=None)
@given(st.lists(_DEF, min_size=1, max_size=4))
def test_a_schema_is_refused_for_a_loop_exactly_when_checking_never_ends(
    defs: list[dict[str, Any]],
) -> None:
    schema = _graph(defs)
    arguments: Any = {}
    for _ in range(5):
        arguments = {"p": arguments}
    try:
        checked = Schema(schema)
    except ValueError as exc:
        assert "loops" in str(exc)
        assert recurses(schema, arguments)
    else:
        assert not recurses(schema, arguments)
        checked.problems(arguments)  # (no RecursionError)


# ------------------------------------------------------------------ 2. outputSchema on RE2

# Backtracking: Python's `re` takes about n**4 steps to find this fails on "hot" (about 2 s
# at n=100, 10-20 s at 140 on a loaded machine); RE2 answers at once.
SLOW_PATTERN = "^(h?){140}(o?){140}(t?){140}x"


def reporter(name: str, output: Any) -> dict[str, Any]:
    """`transfer` under another name, declaring `output` as its outputSchema (the steered
    server's `bad_structured` answer is `{"degrees": "hot"}`)."""
    return {**TRANSFER, "name": name, "outputSchema": output}


def degrees(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"degrees": {"type": "string", "pattern": pattern}}}


async def test_an_output_schema_pattern_cannot_hold_the_event_loop(tmp_path: Path) -> None:
    """The SDK checks a result's structuredContent against the tool's outputSchema with
    jsonschema, so on `re`, synchronously: loomgraph checks it on RE2 instead."""
    state = tmp_path / "s"
    control(state, [reporter("transfer", degrees(SLOW_PATTERN))], answer="bad_structured")
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def heartbeat() -> None:  # how long the event loop goes without running a task
        last = loop.time()
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = loop.time()
    script = [calls("transfer", {"to": "bob", "amount": 1}), "done"]
    (result,), _ = await run(state, script, timeout=2.0)
    took = loop.time() - started
    beat.cancel()
    longest = max(gaps, default=0.0)  # (none: the run ended before the first beat)
    assert longest < 4.0 and took < 30.0, (
        f"a server's outputSchema pattern held the event loop for {longest:.1f} s: {result}"
    )
    assert result["is_error"] and result["error_type"] == "tool_exception"
    assert "returned bad output" in result["content"]
    assert "structuredContent does not fit its outputSchema" in result["content"]
    assert "- degrees: 'hot' does not match" in result["content"]


async def test_structured_content_is_checked_against_the_output_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    loop = {"$ref": "#/properties/degrees"}
    tools = [
        reporter("fits", degrees("^h")),
        reporter("misfits", degrees("^c")),
        reporter("ahead", degrees("^(?=h)")),  # a lookahead: RE2 has none
        reporter("looped", {"type": "object", "properties": {"degrees": {"allOf": [loop]}}}),
        reporter("invalid", {"type": "object", "properties": {"degrees": {"minLength": -1}}}),
    ]
    state = tmp_path / "s"
    control(state, tools, answer="bad_structured")
    script = [calls(name, {"to": "bob", "amount": 1}) for name in ("fits", "misfits", "ahead")]
    found, names = await run(state, [*script, "done"])
    assert names == ["fits", "misfits"]
    fits, misfits, ahead = found
    assert fits == {"content": '{"degrees": "hot"}', "is_error": False}
    assert misfits["error_type"] == "tool_exception"
    assert "- degrees: 'hot' does not match '^c'" in misfits["content"]
    assert ahead["error_type"] == "unknown_tool"  # never offered, never sent
    assert [c["name"] for c in received(state)] == ["fits", "misfits"]
    (warning,) = left_out(caplog, "ahead")
    assert "outputSchema" in warning and "lookahead" in warning
    (warning,) = left_out(caplog, "looped")
    assert "outputSchema" in warning and "$ref that loops: '#/properties/degrees'" in warning
    (warning,) = left_out(caplog, "invalid")
    assert "its outputSchema is not valid JSON Schema" in warning


async def test_a_result_without_the_structured_content_it_declares_is_a_tool_error(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    control(state, [reporter("transfer", degrees("^h"))])  # answers text only
    (result,), _ = await run(state, [calls("transfer", {"to": "bob", "amount": 1}), "done"])
    assert result["error_type"] == "tool_exception"
    assert "has an outputSchema but returned no structuredContent" in result["content"]


async def test_an_output_schema_counts_towards_the_size_of_its_tool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outputSchema is compiled when its tool is listed: it is held to the tool's cap."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    wordy = {"type": "object", "description": "Degrees, as words. " * 200}  # 3,800 characters
    state = tmp_path / "s"
    control(state, [reporter("wordy", wordy), reporter("short", degrees("^h"))])
    mcp = server(state, "s")
    mcp.max_tool_chars = 2_000
    async with Agent("x", model=ScriptedModel(["done"]), tools=[mcp], permissions=ALLOW) as agent:
        [e async for e in agent.stream("go")]
        names = sorted(s["name"] for s in agent.deps.tools.specs())
    assert names == ["short"]
    (warning,) = left_out(caplog, "wordy")
    assert "2,000" in warning and "max_tool_chars" in warning

"""A tool never gets the objects of the model's recorded call, and its progress data cannot
rename the call it reports on.

A tool that changes an argument in place (appends to a list it was given, as plenty of real
code does) must not change what the run recorded the model as sending: the history, the
journal, the audit log and the next model request all keep the call as it was sent.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, JsonValue

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import ModelRequest, ToolCall, ToolResult, ToolSpec, tool_run
from loomgraph.runtime import SqliteRuntime
from loomgraph.tools import Tool, ToolContext, ToolRegistry
from loomgraph.tools.json_schema import json_copy

SENT = {"record": {"id": 7, "tags": ["new"], "meta": {"seen": False}}}


def _tag(record: Any) -> str:
    """Change the record in place, as a tool that means well does."""
    record["tags"].append("seen")
    record["meta"]["seen"] = True
    record["id"] = 0
    return f"tagged {len(record['tags'])}"


@tool
def tag_untyped(record):  # type: ignore[no-untyped-def]
    """Tag a record."""
    return _tag(record)


@tool
def tag_any(record: Any) -> str:
    """Tag a record."""
    return _tag(record)


@tool
def tag_dict(record: dict[str, Any]) -> str:
    """Tag a record."""
    return _tag(record)


@tool
def tag_first(record: list[dict[str, Any]]) -> str:
    """Tag the first record of a list."""
    return _tag(record[0])


class Envelope(BaseModel):
    """A typed wrapper whose own field is free-form."""

    id: int
    tags: list[Any]
    meta: dict[str, Any]


@tool
def tag_envelope(record: Envelope) -> str:
    """Tag a record through a model's free-form fields."""
    record.tags.append("seen")
    record.meta["seen"] = True
    return "tagged"


@tool
def tag_kwargs(**fields):  # type: ignore[no-untyped-def]
    """Tag whatever record is given."""
    return _tag(fields["record"])


@tool
def tag_validated(record: Annotated[dict[str, Any], BeforeValidator(lambda v: v)]) -> str:
    """Tag a record a validator of the tool's own looked at first."""
    return _tag(record)


tag_schema = Tool.from_schema(
    "tag_schema",
    "Tag a record.",
    {"type": "object", "properties": {"record": {"type": "object"}}, "required": ["record"]},
    lambda record: _tag(record),
)

MUTATING = [
    tag_untyped,
    tag_any,
    tag_dict,
    tag_envelope,
    tag_kwargs,
    tag_validated,
    tag_schema,
]


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("mutating", [*MUTATING, tag_first], ids=lambda t: t.name)
async def test_a_tool_mutating_its_arguments_leaves_the_models_call_as_sent(
    mutating: Tool[..., Any], tmp_path: Path
) -> None:
    sent = {"record": [SENT["record"]]} if mutating is tag_first else SENT
    expected = json.loads(json.dumps(sent))
    requests: list[ModelRequest] = []

    def script(request: ModelRequest) -> Any:
        requests.append(request)
        call = {"id": "c1", "tool": mutating.name, "args": json.loads(json.dumps(sent))}
        return [{"tool_calls": [call]}, "done"][request.call_index]

    runtime = SqliteRuntime(tmp_path / "journal.db")
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True, capture_content=True)
    agent = Agent(
        "x", model=ScriptedModel(script), tools=[mutating], runtime=runtime, audit_log=audit
    )
    result = await agent.run("go")
    assert result.status == "completed", result.reason
    told = next(m for m in requests[1].messages if m["role"] == "assistant")["tool_calls"][0]
    assert told["args"] == expected, f"the model is told it sent {told['args']}"
    answered = next(m for m in requests[1].messages if m["role"] == "tool")
    assert "tagged" in str(answered["content"])  # the tool did get (and change) its copy
    (effect,) = [e for e in await runtime.effects(result.run_id) if e.kind == "tool"]
    assert effect.intent["call"]["args"] == expected
    patches = [t.patch for t in await runtime.transitions(result.run_id)]
    (journaled,) = [m for p in patches for m in p.get("messages", []) if m.get("tool_calls")]
    assert journaled["tool_calls"][0]["args"] == expected
    (request,) = [e for e in _entries(tmp_path / "audit.jsonl") if e["action"] == "tool_request"]
    assert request["payload"]["args"] == expected
    await agent.aclose()


@tool
async def transcode(path: str, ctx: ToolContext) -> str:
    """Transcode a video."""
    await ctx.progress("running ffmpeg", tool="ffmpeg", call_id="ffmpeg-7", percent=10)
    return "done"


async def test_progress_data_cannot_replace_the_events_call_id_and_tool() -> None:
    script: list[Any] = [
        {"tool_calls": [{"id": "c1", "tool": "transcode", "args": {"path": "a.mp4"}}]},
        "ok",
    ]
    agent = Agent("x", model=ScriptedModel(script), tools=[transcode])
    progress = [ev.payload async for ev in agent.stream("go") if ev.kind == "tool_progress"]
    await agent.aclose()
    assert progress == [
        {"call_id": "c1", "tool": "transcode", "message": "running ffmpeg", "percent": 10}
    ]


class ReportingHost:
    """A ToolHost of its own whose progress data carries every key the event has."""

    def specs(self) -> list[ToolSpec]:
        return [{"name": "render", "description": "Render.", "parameters": {"type": "object"}}]

    def spec(self, name: str) -> ToolSpec | None:
        return self.specs()[0] if name == "render" else None

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        run = tool_run.get()
        assert run is not None
        await run.progress("half", {"message": "x", "call_id": "y", "tool": "z", "done": 0.5})
        return ToolResult(content="rendered")

    async def close(self) -> None:
        """Nothing to close."""


async def test_a_hosts_progress_data_cannot_replace_the_events_keys_either() -> None:
    script: list[Any] = [{"tool_calls": [{"id": "c9", "tool": "render", "args": {}}]}, "ok"]
    agent = Agent("x", model=ScriptedModel(script), tools=ReportingHost())
    progress = [ev.payload async for ev in agent.stream("go") if ev.kind == "tool_progress"]
    await agent.aclose()
    assert progress == [{"call_id": "c9", "tool": "render", "message": "half", "done": 0.5}]


# ----------------------------------------------------------------- which tools get a copy


class Line(BaseModel):
    """A typed model: pydantic builds it, and its lists, anew from what is sent."""

    sku: str
    sizes: list[int]


class Loose(BaseModel):
    """A model that keeps extra fields as they were sent."""

    model_config = ConfigDict(extra="allow")
    sku: str


class Tree(BaseModel):
    """A recursive model."""

    name: str
    kids: list[Tree] = []


def _tool_of(hint: Any) -> Tool[..., Any]:
    def fn(value):  # type: ignore[no-untyped-def]
        return "ok"

    if hint is not None:
        fn.__annotations__ = {"value": hint}
    return Tool(fn, name="fn")


TYPED = {
    "int": int,
    "str": str,
    "dict[str, list[int]]": dict[str, list[int]],
    "list[Line]": list[Line],
    "tuple[int, str]": tuple[int, str],
    "Tree": Tree,
    "JsonValue": JsonValue,
    "Literal": Literal["a", "b"],
    "datetime | None": datetime | None,
    "after validator": Annotated[int, AfterValidator(abs)],
}
FREE = {
    "untyped": None,
    "Any": Any,
    "object": object,
    "dict": dict,
    "list": list,
    "dict[str, Any]": dict[str, Any],
    "list[dict[str, Any]]": list[dict[str, Any]],
    "int | Any": int | Any,
    "model with Any": Envelope,
    "model keeping extras": Loose,
    "before validator": Annotated[dict[str, int], BeforeValidator(lambda v: v)],
}


@pytest.mark.parametrize(("hint", "copies"), [
    *[pytest.param(h, False, id=n) for n, h in TYPED.items()],
    *[pytest.param(h, True, id=n) for n, h in FREE.items()],
])  # fmt: skip
def test_only_tools_that_could_get_the_calls_own_objects_copy_them(hint: Any, copies: bool) -> None:
    assert _tool_of(hint).copies_args is copies


def test_kwargs_and_schema_tools_copy_unless_typed() -> None:
    def loose(**fields):  # type: ignore[no-untyped-def]
        return "ok"

    def counts(**fields: int) -> str:
        return "ok"

    assert Tool(loose).copies_args and not Tool(counts).copies_args
    assert tag_schema.copies_args


# ----------------------------------------------------------------- the invariant

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=24,
)


def _scramble(value: Any) -> None:
    """Change every dict and list reachable from `value` in place."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, BaseModel):
            todo.extend(item.__dict__.values())
        elif isinstance(item, dict):
            todo.extend(item.values())
            item["scrambled"] = True
        elif isinstance(item, list):
            todo.extend(item)
            item.append("scrambled")


@tool
async def scramble_any(value: Any) -> str:
    """Scramble what it gets."""
    _scramble(value)
    return "ok"


@tool
def scramble_untyped(value):  # type: ignore[no-untyped-def]
    """Scramble what it gets, in a worker thread."""
    _scramble(value)
    return "ok"


@tool
async def scramble_json(value: JsonValue) -> str:
    """Scramble what it gets: a typed parameter, validated anew by pydantic (no copy)."""
    _scramble(value)
    return "ok"


@tool
async def scramble_union(value: dict[str, Any] | list[Any] | str | float | bool | None) -> str:
    """Scramble what it gets."""
    _scramble(value)
    return "ok"


class Box(BaseModel):
    """A model with a free-form field."""

    value: Any = None


@tool
async def scramble_box(box: Box) -> str:
    """Scramble what the model's field got."""
    _scramble(box)
    return "ok"


@tool
async def scramble_kwargs(**fields):  # type: ignore[no-untyped-def]
    """Scramble every extra argument."""
    _scramble(fields)
    return "ok"


def _scramble_schema(value: Any = None) -> str:
    _scramble(value)
    return "ok"


scramble_schema = Tool.from_schema(
    "scramble_schema",
    "Scramble what it gets.",
    {"type": "object", "properties": {"value": {}}},
    _scramble_schema,
)
SCRAMBLING = ToolRegistry(
    [
        scramble_any,
        scramble_untyped,
        scramble_json,
        scramble_union,
        scramble_box,
        scramble_kwargs,
        scramble_schema,
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON, name=st.sampled_from(SCRAMBLING.names()))
def test_no_tool_can_change_the_arguments_it_was_called_with(value: Any, name: str) -> None:
    args = {"box": {"value": value}} if name == "scramble_box" else {"value": value}
    sent = json.loads(json.dumps(args))
    call = ToolCall(id="c1", tool=name, args=args)
    result = asyncio.run(SCRAMBLING.call(call, idempotency_key="k"))
    assert not result.get("is_error"), result
    assert args == sent


def _stamp(value: Any) -> Any:
    value.setdefault("stamped", True)  # a validator changing what it is given
    return value


def handle(order: Annotated[dict[str, Any], BeforeValidator(_stamp)]) -> str:
    """Handle a stamped order."""
    return "ok"


def test_a_tools_own_validator_does_not_change_the_call_either() -> None:
    registry = ToolRegistry([handle])
    call = ToolCall(id="c1", tool="handle", args={"order": {"id": 1}})
    assert registry.received_args(call) == {"order": {"id": 1, "stamped": True}}
    assert not asyncio.run(registry.call(call, idempotency_key="k")).get("is_error")
    assert call["args"] == {"order": {"id": 1}}


# ----------------------------------------------------------------- the copy itself


@given(JSON)
def test_a_json_copy_is_equal_and_shares_no_dict_or_list(value: Any) -> None:
    copied = json_copy(value)
    assert copied == value
    assert not _containers(copied) & _containers(value)


def _containers(value: Any) -> set[int]:
    found, todo = set(), [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict | list) and id(item) not in found:
            found.add(id(item))
            todo.extend(item.values() if isinstance(item, dict) else item)
    return found


def test_a_json_copy_keeps_aliases_and_cycles_and_takes_any_depth() -> None:
    shared: list[Any] = [1]
    loop: dict[str, Any] = {"shared": shared, "again": shared}
    loop["self"] = loop
    copied = json_copy(loop)
    assert copied["self"] is copied and copied["shared"] is copied["again"]
    assert copied["shared"] is not shared and copied["shared"] == [1]
    deep: list[Any] = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = [deep]
    assert _depth(json_copy(deep)) == 100_001
    marker = object()  # anything but a dict or a list is shared, as JSON's scalars are
    assert json_copy({"x": (marker,)})["x"][0] is marker


def _depth(value: Any) -> int:
    depth = 1
    while value:
        value, depth = value[0], depth + 1
    return depth

"""How a tool's return value becomes the text the model reads (`loomgraph.tools.to_content`).

- Text with a lone surrogate (a file name from `os.listdir`) or NUL is written with visible
  escapes, so the next model request can be encoded and the result stored.
- A pydantic model reads the same returned alone or nested: one conversion, by alias.
- Each bytes value is UTF-8 text, or standard base64 when it is not UTF-8, on its own.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from fake_servers import FakeServer, Reply, chat_stream
from loomgraph import Agent, tool
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ToolCall, escaped
from loomgraph.tools import ToolRegistry, to_content

NOT_UTF8_NAME = os.fsdecode(b"rapport-\xe9t\xe9.txt")  # 'rapport-\udce9t\udce9.txt'


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


async def call(host: ToolRegistry, name: str, args: dict[str, Any] | None = None) -> Any:
    request: ToolCall = {"id": "c1", "tool": name, "args": args or {}}
    return await host.call(request, idempotency_key="k")


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ------------------------------------------------------------- lone surrogates


@tool
def list_reports() -> list[str]:
    """List the report files (a name that is not UTF-8 comes back surrogate-escaped)."""
    return [NOT_UTF8_NAME, "notes.txt"]


async def test_a_result_with_lone_surrogates_does_not_fail_the_run(server: FakeServer) -> None:
    server.add(
        Reply(events=chat_stream([], [("call_1", "list_reports", ["{}"])], finish="tool_calls")),
        Reply(events=chat_stream(["two files"])),
    )
    model = OpenAICompatModel(
        "m", base_url=server.url + "/v1", retry_policy=RetryPolicy(max_retries=0)
    )
    agent = Agent("x", model=model, tools=[list_reports])
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "completed", (
        "a tool returned a file name as os.listdir gives it (a lone surrogate for a byte that "
        "is not UTF-8); the result was kept as it is, and the next model request cannot be "
        f"encoded, so the run fails: {result.reason}"
    )
    told = next(m for m in server.bodies[1]["messages"] if m["role"] == "tool")["content"]
    assert "\\udce9" in told  # visible to the model, as an escape
    assert json.loads(told) == [NOT_UTF8_NAME, "notes.txt"]  # and still JSON of the value


def test_a_str_result_shows_lone_surrogates_and_nul_as_escapes() -> None:
    assert to_content(NOT_UTF8_NAME) == "rapport-\\udce9t\\udce9.txt"
    assert to_content("a\x00b") == "a\\x00b"
    assert to_content({"k\x00": "v"}) == '{"k\\u0000": "v"}'  # JSON's own escape
    shown = to_content({NOT_UTF8_NAME: [NOT_UTF8_NAME]})
    assert encodable(shown)
    assert json.loads(shown) == {NOT_UTF8_NAME: [NOT_UTF8_NAME]}


async def test_an_error_message_with_a_lone_surrogate_can_be_sent() -> None:
    def open_report(name: str) -> str:
        """Open a report."""
        raise LookupError(f"no report named {NOT_UTF8_NAME}")

    result = await call(ToolRegistry([open_report]), "open_report", {"name": "x"})
    assert result["error_type"] == "tool_exception"
    assert encodable(result["content"]), (
        f"the error result {result['content']!r} holds a lone surrogate: the next model "
        "request cannot be encoded"
    )
    assert result["content"] == "LookupError: no report named rapport-\\udce9t\\udce9.txt"


# ------------------------------------------------------------- models: one conversion


class User(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    user_name: str = Field(alias="userName")
    avatar: bytes = b""


class Shown(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    internal_id: int = Field(serialization_alias="id")


@dataclass
class Page:
    users: list[User]


def test_a_model_reads_the_same_returned_alone_or_in_a_list() -> None:
    user = User(user_name="ada")
    alone, listed = json.loads(to_content(user)), json.loads(to_content([user]))[0]
    assert alone == listed, (
        f"one model reads {alone} returned alone but {listed} inside a list: "
        "the top-level model is written by model_dump_json (field names), a nested one by "
        "to_jsonable_python (aliases)"
    )
    pictured = User(user_name="ada", avatar=b"\x89PNG\xff")
    assert json.loads(to_content([pictured]))[0]["avatar"] == "iVBOR/8="
    assert json.loads(to_content(pictured))["avatar"] == "iVBOR/8="


def test_a_model_is_written_by_its_aliases_wherever_it_is() -> None:
    shown = Shown(internal_id=7)
    assert json.loads(to_content(shown)) == {"id": 7}
    assert json.loads(to_content({"item": shown})) == {"item": {"id": 7}}
    assert json.loads(to_content((shown,))) == [{"id": 7}]
    page = Page(users=[User(user_name="ada")])
    assert json.loads(to_content(page)) == {"users": [{"userName": "ada", "avatar": ""}]}
    assert to_content(Shown(internal_id=7)) == '{"id":7}'  # a model alone stays compact


# ------------------------------------------------------------- bytes: each value on its own


def test_utf8_bytes_stay_text_next_to_bytes_that_are_not() -> None:
    shown = json.loads(to_content({"name": b"report.txt", "thumbnail": b"\xff\xd8\xff"}))
    assert shown["name"] == "report.txt", (
        f"UTF-8 bytes were shown as {shown['name']!r}: the docs say bytes read as UTF-8 text "
        "(base64 when they are not UTF-8), but one value that is not UTF-8 re-encodes every "
        "bytes value of the result as base64"
    )
    assert shown["thumbnail"] == "/9j/"


def test_bytes_that_are_not_utf8_are_standard_base64_everywhere() -> None:
    raw = b"\xfb\xff\xbf"  # "+/+/" in the standard alphabet, "-_-_" in the URL-safe one
    assert json.loads(to_content(raw)) == "+/+/"
    assert json.loads(to_content([b"ok", bytearray(raw)])) == ["ok", "+/+/"]
    assert json.loads(to_content({raw: 1, b"k": 2})) == {"+/+/": 1, "k": 2}
    assert json.loads(to_content({"u": User(user_name="é", avatar=raw), "n": b"n"})) == {
        "u": {"userName": "é", "avatar": "+/+/"},
        "n": "n",
    }


async def test_a_cycle_holding_bytes_that_are_not_utf8_says_what_is_wrong() -> None:
    def cyclic() -> object:
        """Return a list that contains itself."""
        items: list[Any] = [User(user_name="ada", avatar=b"\xff")]
        items.append(items)
        return items

    result = await call(ToolRegistry([cyclic]), "cyclic")
    assert result["error_type"] == "tool_exception"
    assert "ran and returned" in result["content"]
    assert "Circular reference" in result["content"], result["content"]


async def test_a_generator_of_bytes_that_are_not_utf8_is_an_error_naming_it() -> None:
    def chunks() -> Iterator[bytes]:
        """Chunks (the second is not UTF-8: converting it consumes the generator)."""
        return (chunk for chunk in [b"ok", b"\xff", b"end"])

    result = await call(ToolRegistry([chunks]), "chunks")
    assert result["is_error"], (
        f"the generator was read twice and {result['content']!r} holds only what the first, "
        "failed conversion left of it"
    )
    assert result["error_type"] == "tool_exception"
    assert "generator" in result["content"] and "not UTF-8" in result["content"]


# ------------------------------------------------------------- the invariant

# Lone low surrogates, as os.fsdecode makes them (a lone high one followed by a low one would
# read back from JSON as one character: not a value a tool gets from the system).
_chars = st.one_of(
    st.characters(max_codepoint=0xD7FF),
    st.characters(min_codepoint=0xE000),
    st.sampled_from(["\udc80", "\udce9", "\udcff", "\x00", "é", "\\"]),
)
_text = st.text(alphabet=_chars, max_size=8)
_leaves = st.one_of(st.none(), st.booleans(), st.integers(), _text, st.binary(max_size=8))
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)


def _expected(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_expected(item) for item in value]
    if isinstance(value, dict):
        return {key: _expected(item) for key, item in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(_values)
def test_every_result_is_encodable_text_of_its_value(value: Any) -> None:
    shown = to_content(value)
    assert encodable(shown)
    if isinstance(value, str):
        assert shown == escaped(value)
    else:
        assert json.loads(shown) == _expected(value)

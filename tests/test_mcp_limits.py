"""What an MCP server's listing can make loomgraph do, bounded: a schema's regular
expressions run on RE2, which never backtracks (never on Python's `re`), with the answers `re`
gives; a tool's description and schema are capped in size; and `Tool.from_schema` never
fetches a `$ref`.

Tests that would stall for minutes without the fix run the stalling part in a subprocess
with a time limit (`re` holds the GIL: no thread or timeout in this process would get it
back): without the fix they fail at the limit instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools import MCPServer, Tool
from loomgraph.tools.json_schema import UnresolvableRef
from loomgraph.tools.mcp import MCPListingTooLarge
from loomgraph.tools.mcp.checks import Schema, check_arguments
from loomgraph.tools.re2_patterns import WORK, compiled
from loomgraph.tools.schema_patterns import SCHEMA_PROGRAM
from mcp_servers import PYTHON

SLOW = {"start_timeout": 600.0, "timeout": 600.0}  # a loaded machine starts Python slowly
ALLOW = StandardPermissions(allow=["*"])
WAIT = 300.0  # bounded waits: a test that would hang fails instead
BOUND = 60.0  # what a check that must not stall may take, with Python's start, on a slow machine
EVIL = "^(a+)+$"  # `re` backtracks 2**40 ways on 40 a's and a "!"
SLOW_TEXT = "a" * 40 + "!"
EVIL_KEY, SLOW_KEY = "^(b+)+$", "b" * 40 + "!"  # (a text of the first's result would be taint)

# A stdio MCP server (stdlib only) listing the tools in the JSON file argv[1] and recording
# each call it receives in argv[2]; a call answers "NAME got ARGS".
SERVER = """
import json, sys
tools = json.load(open(sys.argv[1]))
for line in sys.stdin:
    message = json.loads(line)
    method, rid, params = message.get("method"), message.get("id"), message.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "lister", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": tools}
    elif method == "tools/call":
        args = params.get("arguments") or {}
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"name": params["name"], "args": args}) + "\\n")
        text = params["name"] + " got " + json.dumps(args)
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    elif method == "ping" and rid is not None:
        result = {}
    else:
        continue
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}) + "\\n")
    sys.stdout.flush()
"""


def lister(tmp_path: Path, tools: list[dict[str, Any]], **options: Any) -> MCPServer:
    """An MCP server listing `tools`; what it received is in tmp_path / "calls"."""
    script, listing = tmp_path / "lister.py", tmp_path / "tools.json"
    script.write_text(SERVER)
    listing.write_text(json.dumps(tools))
    args = [str(script), str(listing), str(tmp_path / "calls")]
    return MCPServer.stdio(PYTHON, *args, name="lister", **{**SLOW, **options})


def a_tool(name: str, schema: dict[str, Any], description: str = "t") -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": {"type": "object", **schema}}


def calls(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": name, "args": args}]}


def received(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def run_script(server: MCPServer, script: list[Any]) -> tuple[list[Any], list[str]]:
    """The tool results of a scripted run, and the names the agent offered."""
    async with Agent("x", model=ScriptedModel(script), tools=[server], permissions=ALLOW) as agent:
        events = await asyncio.wait_for(_events(agent), WAIT)
        names = sorted(s["name"] for s in agent.deps.tools.specs())
    return [e.payload["result"] for e in events if e.kind == "tool_result"], names


async def _events(agent: Agent) -> list[Any]:
    return [e async for e in agent.stream("go")]


def isolated(scenario: str, tmp_path: Path) -> Any:
    """Run `scenario` (a function of this module) in a fresh Python, within BOUND seconds:
    what would stall fails the test at the limit instead of hanging it."""
    done = subprocess.run(
        [PYTHON, __file__, scenario, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# ------------------------------------------------------------------ 1. patterns: on RE2


def scenario_catastrophic(tmp_path: Path) -> Any:
    """A server's tools with catastrophic patterns, called with the text that stalls `re`."""
    tools = [
        a_tool("lookup", {"properties": {"code": {"type": "string", "pattern": EVIL}}}),
        a_tool("keyed", {"patternProperties": {EVIL_KEY: {}}, "additionalProperties": False}),
    ]
    script = [
        calls("lookup", {"code": SLOW_TEXT}),
        calls("keyed", {SLOW_KEY: 1}),
        calls("lookup", {"code": "aaaa"}),  # the tool stays usable
        calls("keyed", {"bbbb": 1}),
        "done",
    ]
    results, _ = asyncio.run(run_script(lister(tmp_path, tools), script))
    return {"results": results, "received": received(tmp_path)}


def test_a_catastrophic_pattern_is_checked_in_one_pass(tmp_path: Path) -> None:
    out = isolated("scenario_catastrophic", tmp_path)
    slow_value, slow_key, value, key = out["results"]
    assert slow_value["error_type"] == "invalid_arguments"
    assert f"{SLOW_TEXT!r} does not match {EVIL!r}" in slow_value["content"]
    assert slow_key["error_type"] == "invalid_arguments"
    assert "does not match any of the regexes" in slow_key["content"]
    assert value == {"content": 'lookup got {"code": "aaaa"}', "is_error": False}
    assert key == {"content": 'keyed got {"bbbb": 1}', "is_error": False}
    assert [c["args"] for c in out["received"]] == [{"code": "aaaa"}, {"bbbb": 1}]


def test_a_schema_check_of_a_slow_pattern_finishes(tmp_path: Path) -> None:
    # The check alone, as a caller of the checks module makes it.
    out = isolated("scenario_check_only", tmp_path)
    assert out["error_type"] == "invalid_arguments" and "does not match" in out["content"]


def scenario_check_only(tmp_path: Path) -> Any:
    schema = Schema({"type": "object", "properties": {"q": {"pattern": EVIL}}})
    return check_arguments("lookup", {"q": SLOW_TEXT}, schema)


ORDINARY = [
    (r"^\d{4}-\d{2}-\d{2}$", ["2024-01-31", "2024-1-31", "2024-01-31\n", "x2024-01-31"]),
    (r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", ["a.b@c.io", "a@b", "@c.io"]),
    (r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$", ["0" * 8 + "-0000" * 3 + "-" + "0" * 12]),
    (r"\bcat\b", ["a cat.", "concat", "cat", ""]),
    (r"\Bat", ["cat", "at", ""]),
    (r"^https?://[^\s/$.?#].[^\s]*$", ["https://example.com/x", "ftp://x", "http://"]),
    (r"colou?r|gr[ae]y", ["color", "grey", "gray!", "colr"]),
    (r"^(?:[a-z]+\.)*[a-z]+$", ["a.b.c", "a..b", ".a", "abc"]),
    (r"^\w+$", ["héllo_1", "hé llo", "日本語"]),
    (r"^.{2,3}?$", ["ab", "abcd", "a\n"]),
    (r"x*", ["", "yyy"]),
    (r"\Aab\Z", ["ab", "ab\n"]),
    (r"[\]a-]+", ["]-a", "b"]),
    (r"\x41\u0042\101\0", ["ABA\0", "ABA"]),
    (r"(?P<n>a|b)(?#comment)c{2}", ["acc", "bc"]),
    (EVIL, ["aaaa", "", "aab"]),
    # Where RE2's own reading differs from `re`'s, the answer is still `re`'s:
    (r"^\d+$", ["\u0663\u0664", "12"]),  # Unicode digits (RE2: ASCII)
    (r"^\s$", ["\v", "\x1c", "\xa0", "\u3000"]),  # Unicode spaces (RE2: no \v)
    (r"^[\w-]+$", ["é-1", "a b"]),  # \w in a class
    (r"^[^\W\d]+$", ["é_", "é1", "-"]),  # negated shorthands in a negated class
    (r"^[a-z]+$", ["abc\n", "abc\n\n", "ab\nc\n", "\n"]),  # `$` before a final newline
    (r"^a$|b\Z", ["a\n", "b\n", "a\nb\n", "x\nb"]),  # \Z is the very end (RE2: \z)
    (r"a{,2}b", ["ab", "a{,2}b"]),  # {,n} is a repeat (RE2: characters)
    (r"[[:alpha:]]", ["b", "[:a"]),  # no POSIX classes in `re`
    (r"(?i:colou?r)|(?s:x.y)", ["COLOR", "x\ny", "X\nY"]),
    (r"\é\-\N{BULLET}[\b]\U0001F600", ["é-\u2022\b\U0001f600"]),
    (r"\B", ["", "a", " "]),
]


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # ([[:alpha:]])
@pytest.mark.parametrize(("pattern", "texts"), ORDINARY)
def test_patterns_match_as_re_does(pattern: str, texts: list[str]) -> None:
    for text in texts:
        assert compiled(pattern).search(text) == (re.search(pattern, text) is not None), text


ATOMS = ["a", "b", ".", r"\d", r"\w", r"\s", "[ab]", "[^a]", r"\b", r"\B", "^", "$", r"\Z"]
ATOMS += [r"\D", r"\W", r"\S", r"[\w-]", r"[^\s\d]", r"\x61", "(?i:a)", "(?s:.)", "a{,1}"]


def _patterns() -> st.SearchStrategy[str]:
    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantifier = st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{,2}", "*?", "{0}"])
        return st.one_of(
            st.lists(inner, min_size=1, max_size=3).map("".join),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: "(" + "|".join(xs) + ")"),
            st.tuples(inner, quantifier).map(lambda t: f"(?:{t[0]}){t[1]}"),
        )

    return st.recursive(st.sampled_from(ATOMS), grow, max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(_patterns(), st.lists(st.text("ab \n_1éA\u0663\x1c", max_size=8), min_size=1, max_size=4))
def test_random_patterns_match_as_re_does(pattern: str, texts: list[str]) -> None:
    try:
        expected = re.compile(pattern)
    except re.error:
        return  # (say, a repeated assertion): jsonschema refuses the schema first
    for text in texts:  # short texts: `re` is quick on them, whatever the pattern
        found, wanted = compiled(pattern).search(text), expected.search(text) is not None
        if ("\\b" in pattern or "\\B" in pattern) and not text.isascii():
            continue  # RE2's word boundaries know ASCII words only (docs/tools.md)
        if "$" in pattern and text.endswith("\n") and "\n" in text[:-1]:
            assert wanted or not found  # a `$` read before the newline it then reads is not seen
            continue
        assert found == wanted


def test_checking_work_is_bounded_and_the_model_is_told(tmp_path: Path) -> None:
    # RE2 is linear in the text, but its worst case (the DFA gives up on an unanchored large
    # repeat and the NFA runs every instruction on every byte) is seconds on a long text: the
    # check stops at its limit, and the model is told to send less.
    properties = {"q": {"pattern": "[a-z]{1000}!"}, "r": {"pattern": "^[a-z]{1000}!$"}}
    schema = Schema({"type": "object", "properties": properties})
    long = WORK // 1000 + 1  # characters: over the limit with a program of 1,000 instructions
    result = check_arguments("lookup", {"q": "a" * long}, schema)
    assert result is not None and result["error_type"] == "invalid_arguments"
    assert "too long to check against the pattern" in result["content"]
    assert f"{long:,} characters" in result["content"]
    short = check_arguments("lookup", {"q": "a" * 100}, schema)  # the limit is per check
    assert short is not None and "does not match" in short["content"]
    assert check_arguments("lookup", {"r": "a" * 1000 + "!"}, schema) is None
    # Ordinary patterns check a million characters (the default tool-argument limit) within
    # it; on ASCII text \w is its ASCII part, a small program.
    ordinary = Schema({"type": "object", "properties": {"q": {"pattern": r"^[\w .,-]+$"}}})
    assert check_arguments("lookup", {"q": "word, " * 166_666}, ordinary) is None


async def test_patterns_re2_cannot_run_leave_their_tool_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    string = {"type": "string"}
    many = range(60, 68)  # each about 80,000 instructions: over the limit in all, not alone
    tools = [
        a_tool("ahead", {"properties": {"q": {**string, "pattern": "^(?=.*[A-Z]).{8,}$"}}}),
        a_tool("backref", {"patternProperties": {r"^(a)\1$": {}}}),
        a_tool("huge_repeat", {"properties": {"q": {"pattern": "^(a{1,1000}){1,1000}$"}}}),
        a_tool("too_large", {"properties": {"q": {"pattern": r"^\w{1,1000}$"}}}),  # (Unicode \w)
        a_tool("flag", {"properties": {"q": {"pattern": "(?m)^a$"}}}),
        a_tool("many", {"properties": {f"q{n}": {"pattern": rf"^\w{{1,{n}}}$"} for n in many}}),
        a_tool(
            "dialect",  # a nested $schema would check that part with jsonschema's own `re`
            {
                "properties": {
                    "q": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": EVIL}
                }
            },
        ),
        a_tool("unevaluated", {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}),
        a_tool("code", {"properties": {"q": {**string, "pattern": r"^[A-Z]{3}-\d+$"}}}),
    ]
    script = [calls("code", {"q": "ABC-12"}), calls("code", {"q": "abc"}), "done"]
    results, names = await run_script(lister(tmp_path, tools), script)
    assert names == ["code"]
    left_out = ["ahead", "backref", "huge_repeat", "too_large", "flag", "many"]
    left_out += ["dialect", "unevaluated"]
    warnings = {
        name: message
        for r in caplog.records
        for name in left_out
        if f"tool '{name}' is not offered" in (message := r.getMessage())
    }
    assert sorted(warnings) == sorted(left_out)
    assert all("'lister'" in message for message in warnings.values())
    assert "`pattern`" in warnings["ahead"] and "lookahead" in warnings["ahead"]
    assert "properties.q.pattern" in warnings["ahead"]
    assert (
        "`patternProperties` key" in warnings["backref"] and "backreference" in warnings["backref"]
    )
    assert "a repeat past 1,000" in warnings["huge_repeat"]
    assert "too large" in warnings["too_large"]
    assert "inline flag m" in warnings["flag"]
    assert f"more than {SCHEMA_PROGRAM:,} RE2 instructions" in warnings["many"]
    assert "$schema" in warnings["dialect"]
    assert "unevaluatedProperties" in warnings["unevaluated"]
    ok, bad = results
    assert ok == {"content": 'code got {"q": "ABC-12"}', "is_error": False}
    assert bad["error_type"] == "invalid_arguments" and "does not match" in bad["content"]


# ------------------------------------------------------------------ 2. size of a tool


async def test_a_tool_too_large_for_every_request_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    big = "Use this tool wisely. " * 50_000  # 1.1 MB
    tools = [
        a_tool("wordy", {}, description=big),
        a_tool("wordy_params", {"properties": {"q": {"type": "string", "description": big}}}),
        a_tool("ok_tool", {"properties": {"n": {"type": "integer"}}}),
    ]
    results, names = await run_script(lister(tmp_path, tools), [calls("wordy", {}), "done"])
    assert names == ["ok_tool"]
    for name in ("wordy", "wordy_params"):
        (warning,) = [
            r.getMessage()
            for r in caplog.records
            if f"tool '{name}' is not offered" in r.getMessage()
        ]
        assert "'lister'" in warning and "max_tool_chars" in warning
        assert f"{MCPServer.max_tool_chars:,}" in warning
    (result,) = results
    assert result["error_type"] == "unknown_tool"  # never offered, so never sent
    assert received(tmp_path) == []


async def test_the_cap_is_a_setting_of_the_server(tmp_path: Path) -> None:
    tools = [a_tool("short", {}), a_tool("longer", {}, description="x" * 200)]
    server = lister(tmp_path, tools)
    server.max_tool_chars = 200  # the second is now over it
    await asyncio.wait_for(server.start(), WAIT)
    try:
        assert server.names() == ["short"]
    finally:
        await server.close()


async def test_a_listing_too_large_in_all_fails_the_start(tmp_path: Path) -> None:
    tools = [a_tool(f"t{i}", {}, description="x" * 300) for i in range(5)]
    server = lister(tmp_path, tools)
    server.max_listing_chars = 1000  # each tool is under the per-tool cap; all five are not
    with pytest.raises(MCPListingTooLarge, match="max_listing_chars") as caught:
        await asyncio.wait_for(server.start(), WAIT)
    assert caught.value.server == "lister"
    await server.close()


# ------------------------------------------------------------------ 3. from_schema's $ref


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request; yields (its URL, the paths)."""
    got: list[str] = []

    class Record(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            got.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_from_schema_never_fetches_a_remote_ref(web: tuple[str, list[str]]) -> None:
    url, got = web
    for schema in (
        {"type": "object", "properties": {"q": {"$ref": f"{url}/x.json"}}},
        {"type": "object", "$defs": {"y": {"$ref": f"{url}/y.json#/z"}}},  # unused, still not
        {"type": "object", "$id": f"{url}/root.json", "properties": {"q": {"$ref": "other.json"}}},
    ):
        with pytest.raises(UnresolvableRef) as caught:
            Tool.from_schema("remote", "Uses a remote schema.", schema, lambda q="": q)
        assert isinstance(caught.value, ValueError)  # what from_schema raises for a bad schema
        assert caught.value.tool == "remote"
        assert "never fetched" in str(caught.value) and repr(caught.value.ref) in str(caught.value)
    assert got == []


def test_from_schema_follows_refs_inside_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"q": {"$ref": "#/$defs/code"}},
        "$defs": {"code": {"type": "string"}},
    }
    item = Tool.from_schema("local", "d", schema, lambda q: q)
    assert item.bind({"q": "x"}, "key") == ((), {"q": "x"})
    missing = {"type": "object", "properties": {"q": {"$ref": "#/$defs/nothing"}}}
    with pytest.raises(UnresolvableRef, match="#/\\$defs/nothing"):
        Tool.from_schema("missing", "d", missing, lambda q: q)


if __name__ == "__main__":  # isolated(): python test_mcp_limits.py SCENARIO TMP_PATH
    print(json.dumps(globals()[sys.argv[1]](Path(sys.argv[2]))))

"""What loomgraph takes from an MCP server it does not trust, against real stdio servers
(tests/mcp_evil_server.py): a late tool cannot take over a name, a listing cannot hold a
call past its time limit or grow without end, names and arguments meet the rules local tools
meet, and an image is kept only when it is one."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools import MCPServer, MCPServerError
from loomgraph.tools.mcp import MCPListingTooLarge
from mcp_servers import PNG, PYTHON

EVIL = str(Path(__file__).with_name("mcp_evil_server.py"))
SLOW = {"start_timeout": 600.0, "timeout": 600.0}  # a loaded machine starts Python slowly
ALLOW = StandardPermissions(allow=["*"])
WAIT = 300.0  # bounded waits: a test that would hang fails instead


def evil(mode: str, state: Path | None = None, **options: Any) -> MCPServer:
    args = [EVIL, mode, *([str(state)] if state else [])]
    name = options.pop("name", "evil")
    return MCPServer.stdio(PYTHON, *args, name=name, **{**SLOW, **options})


def calls(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": name, "args": args}]}


def seen(state: Path) -> list[dict[str, Any]]:
    """What the server recorded: its starts and the calls it received."""
    if not state.exists():
        return []
    return [json.loads(line) for line in state.read_text().splitlines()]


def received(state: Path) -> list[dict[str, Any]]:
    return [entry for entry in seen(state) if "name" in entry]


def results_of(events: list[Any]) -> list[dict[str, Any]]:
    return [e.payload["result"] for e in events if e.kind == "tool_result"]


async def until(condition: Any, what: str) -> None:
    for _ in range(int(WAIT * 20)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited {WAIT:g} s for {what}")


# ------------------------------------------------------------------ 1. names keep their owner


async def test_a_late_tool_cannot_take_over_another_servers_tool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    attacker_log, bank_log = tmp_path / "attacker", tmp_path / "bank"
    # The attacker is listed first: a rebuild in server order would hand it the name.
    attacker = evil("steal:transfer", attacker_log, name="attacker")
    bank = evil("victim", bank_log, name="bank")
    script = [
        calls("transfer", {"secret": "first"}),
        calls("own", {}),  # the attacker announces a list change and lists `transfer`
        calls("transfer", {"secret": "s3cr3t-token"}),
        "done",
    ]
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    async with Agent(
        "x", model=ScriptedModel(script), tools=[attacker, bank], permissions=ALLOW
    ) as agent:
        result = await agent.run("pay")
        assert result.status == "completed"
        assert attacker.listings == 2  # the new listing was in before the next turn
        spec = agent.deps.tools.spec("transfer")
        assert spec is not None and "secret" in spec["parameters"]["properties"]
        # A second run (the same script) starts: the owner keeps the name, nothing is refused.
        again = await agent.run("pay again")
        assert again.status == "completed"
    assert [c["name"] for c in received(attacker_log)] == ["own", "own"]
    assert [c["args"]["secret"] for c in received(bank_log)] == ["first", "s3cr3t-token"] * 2
    warnings = [r.getMessage() for r in caplog.records if "'transfer'" in r.getMessage()]
    assert warnings and "'bank'" in warnings[0] and "'attacker'" in warnings[0]


async def test_the_same_rule_holds_for_prefixed_names_and_local_tools(tmp_path: Path) -> None:
    attacker_log, bank_log = tmp_path / "attacker", tmp_path / "bank"

    @tool
    def echo(text: str) -> str:
        """A local tool the attacker also lists later."""
        return f"local {text}"

    attacker = evil("steal:bank_transfer,echo", attacker_log, name="attacker")
    bank = evil("victim", bank_log, name="bank", prefix="bank")
    script = [
        calls("own", {}),
        calls("bank_transfer", {"secret": "s3cr3t"}),
        calls("echo", {"text": "hi"}),
        "done",
    ]
    async with Agent(
        "x", model=ScriptedModel(script), tools=[echo, attacker, bank], permissions=ALLOW
    ) as agent:
        events = [e async for e in agent.stream("pay")]
        names = [s["name"] for s in agent.deps.tools.specs()]
    _own, transfer, local = results_of(events)
    assert not transfer["is_error"] and local["content"] == "local hi"
    assert [c["name"] for c in received(attacker_log)] == ["own"]
    assert [c["args"] for c in received(bank_log)] == [{"secret": "s3cr3t"}]
    assert sorted(names) == ["bank_transfer", "echo", "own"]


# ------------------------------------------------------------------ 2. listings are bounded


async def test_a_relisting_that_never_answers_does_not_hold_the_call(tmp_path: Path) -> None:
    server = evil("hanglist", tmp_path / "log", timeout=2.0)
    script = [calls("ok_tool", {"n": 1}), "done"]
    async with Agent("x", model=ScriptedModel(script), tools=[server], permissions=ALLOW) as agent:
        started = time.monotonic()
        events = await asyncio.wait_for(_stream(agent), WAIT)
        took = time.monotonic() - started
        assert [s["name"] for s in server.specs()] == ["ok_tool"]  # the old list is kept
    (result,) = results_of(events)
    assert result == {"content": "done", "is_error": False}
    assert events[-1].payload["result"]["status"] == "completed"
    # The call's limit is 2 s, the listing's (start_timeout) 600 s: the call did not wait for it.
    assert took < 60, took


async def test_a_listing_that_pages_forever_is_capped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    server = evil("infpages", tmp_path / "log", timeout=2.0)
    script = [calls("ok_tool", {"n": 1}), "done"]
    async with Agent("x", model=ScriptedModel(script), tools=[server], permissions=ALLOW) as agent:
        events = await asyncio.wait_for(_stream(agent), WAIT)
        assert events[-1].payload["result"]["status"] == "completed"
        await until(lambda: any("pages" in r.getMessage() for r in caplog.records), "the cap")
        assert [s["name"] for s in server.specs()] == ["ok_tool"]  # nothing of the endless list
    (warning,) = [r.getMessage() for r in caplog.records if "pages" in r.getMessage()]
    assert "'evil'" in warning and str(MCPServer.max_pages) in warning


async def test_a_first_listing_over_the_cap_fails_the_start(tmp_path: Path) -> None:
    server = evil("allpages", tmp_path / "log")
    agent = Agent("x", model=ScriptedModel(["x"]), tools=[server])
    with pytest.raises(MCPListingTooLarge, match="'evil'") as caught:
        await asyncio.wait_for(agent.run("hi"), WAIT)
    assert isinstance(caught.value, MCPServerError)
    assert f"more than {MCPServer.max_pages} pages" in str(caught.value)
    await agent.aclose()


async def test_a_first_listing_of_too_many_tools_fails_the_start(tmp_path: Path) -> None:
    server = evil("names", tmp_path / "log")
    server.max_tools = 3  # the listing has 8
    with pytest.raises(MCPListingTooLarge, match="more than 3 tools") as caught:
        await asyncio.wait_for(server.start(), WAIT)
    assert caught.value.server == "evil"
    await server.close()


async def _stream(agent: Agent) -> list[Any]:
    return [e async for e in agent.stream("go")]


# ------------------------------------------------------------------ 3. names


async def test_tool_names_no_model_takes_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")

    @tool
    def echo(text: str) -> str:
        """A local tool."""
        return text

    server = evil("names", tmp_path / "log", prefix="p")
    script = [calls("p_send email", {}), "done"]
    async with Agent(
        "x", model=ScriptedModel(script), tools=[echo, server], permissions=ALLOW
    ) as agent:
        events = [e async for e in agent.stream("go")]
        names = [s["name"] for s in agent.deps.tools.specs()]
    assert names == ["echo", "p_" + "y" * 62, "p_ok_tool"]
    (result,) = results_of(events)
    assert result["error_type"] == "unknown_tool"
    assert received(tmp_path / "log") == []
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    for left_out in ("p_send email", "p_re\u0430d_file", "p_a.b/c", "p_" + "z" * 63):
        assert f"{left_out!r}" in warnings
    assert "'evil'" in warnings


# ------------------------------------------------------------------ 4. arguments


async def test_arguments_are_checked_against_the_input_schema(tmp_path: Path) -> None:
    state = tmp_path / "log"
    bad = calls("ok_tool", {"n": "x"})
    script = [calls("ok_tool", {"n": 1}), bad, bad, bad, "never"]
    async with Agent(
        "x", model=ScriptedModel(script), tools=[evil("plain", state)], permissions=ALLOW
    ) as agent:
        events = [e async for e in agent.stream("go")]
    good, *invalid = results_of(events)
    assert not good["is_error"]
    assert len(invalid) == 3
    assert all(r["error_type"] == "invalid_arguments" and "- n:" in r["content"] for r in invalid)
    final = events[-1].payload["result"]
    assert final["status"] == "failed" and "ToolArgsInvalid" in final["reason"]
    assert [c["args"] for c in received(state)] == [{"n": 1}]  # the bad ones never left


async def test_invalid_params_from_the_server_count_as_invalid_arguments(tmp_path: Path) -> None:
    script = [calls("ok_tool", {"n": 1}) for _ in range(6)] + ["never"]
    server = evil("invalid", tmp_path / "log")
    async with Agent("x", model=ScriptedModel(script), tools=[server], permissions=ALLOW) as agent:
        events = [e async for e in agent.stream("go")]
    results = results_of(events)
    assert len(results) == 3
    assert all(r["error_type"] == "invalid_arguments" for r in results)
    assert "n must be an integer" in results[0]["content"]
    assert events[-1].payload["result"]["status"] == "failed"


async def test_a_lone_surrogate_is_invalid_arguments_not_a_dead_server(tmp_path: Path) -> None:
    state = tmp_path / "log"
    script = [
        calls("ok_tool", {"n": 1, "note": "\ud800"}),
        calls("ok_tool", {"n": 2, "\udfff": "key"}),
        calls("ok_tool", {"n": 3}),  # (three invalid calls in a row would end the run)
        calls("ok_tool", {"n": 4}),
        "done",
    ]
    async with Agent(
        "x", model=ScriptedModel(script), tools=[evil("plain", state)], permissions=ALLOW
    ) as agent:
        events = [e async for e in agent.stream("go")]
    # (A NaN argument is no JSON: the model's answer is refused as an unusable call, on
    # every journal: tests/test_tool_args.py.)
    value, key, good, last = results_of(events)
    for bad in (value, key):
        assert bad["error_type"] == "invalid_arguments"
    assert "surrogate" in value["content"] and "surrogate" in key["content"]
    assert good == {"content": 'ok_tool got {"n": 3}', "is_error": False}
    assert last == {"content": 'ok_tool got {"n": 4}', "is_error": False}
    assert [e for e in seen(state) if "start" in e] == [{"start": True}]  # never restarted
    assert [c["args"] for c in received(state)] == [{"n": 3}, {"n": 4}]


async def test_a_schema_that_is_not_an_object_schema_leaves_its_tool_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    fetched = threading.Event()
    connected: list[bool] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)

    def watch() -> None:  # a remote $ref must never be fetched (the validator would GET it)
        while not fetched.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connected.append(True)
            fetched.set()
            conn.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/schema.json"
    server = MCPServer.stdio(PYTHON, EVIL, "badschema", name="evil", env={"STATE_URL": url}, **SLOW)
    script = [calls("remote_ref", {"q": 1}), "done"]
    try:
        async with Agent(
            "x", model=ScriptedModel(script), tools=[server], permissions=ALLOW
        ) as agent:
            events = [e async for e in agent.stream("go")]
            names = sorted(s["name"] for s in agent.deps.tools.specs())
    finally:
        fetched.set()
        listener.close()
        watcher.join(WAIT)
    assert names == ["ok_tool", "remote_ref"]
    assert connected == []  # the $ref was not fetched
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "'s_bad_type'" in warnings and "'evil'" in warnings
    (result,) = results_of(events)
    assert result["is_error"] and "$ref" in result["content"]


# ------------------------------------------------------------------ 5. images


async def test_an_image_is_kept_only_when_its_bytes_are_what_it_says(tmp_path: Path) -> None:
    import base64

    script = [calls("ok_tool", {"n": 1}), "done"]
    async with Agent(
        "x",
        model=ScriptedModel(script),
        tools=[evil("badimg", tmp_path / "log")],
        permissions=ALLOW,
    ) as agent:
        events = [e async for e in agent.stream("go")]
    (result,) = results_of(events)
    kept = [image["media_type"] for image in result["images"]]
    assert kept == ["image/png", "image/jpeg", "image/gif", "image/webp"]
    assert result["images"][0]["data"] == base64.b64encode(PNG).decode()
    lines = result["content"].splitlines()
    assert lines[0] == "see the pictures"
    assert lines[1] == "[image left out: not valid base64]"
    assert lines[2] == "[image left out: declared image/png, but the bytes are not PNG]"
    assert lines[3] == f"[image: image/png, {len(PNG)} bytes]"
    assert lines[4:] == [
        "[image: image/jpeg, 11 bytes]",
        "[image: image/gif, 10 bytes]",
        "[image: image/webp, 16 bytes]",
    ]

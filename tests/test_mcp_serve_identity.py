"""`loomgraph mcp-serve` acts as one caller, never one a tool argument names: over stdio the
user it was started as (`--user`, approving only with `--approver`), over `--http` the user
of each request's API key (the keys `loomgraph serve` uses). Another user's run is not found;
approving needs the approver role. Driven by the official SDK's client, over stdio and over
streamable HTTP on loopback, against one SQLite journal the test also writes to."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import loomgraph
from loomgraph.serve.store import open_store
from mcp_served import free_port, served, text

TESTS = Path(__file__).resolve().parent
SRC = Path(loomgraph.__file__).resolve().parents[1]
AGENT = "mcp_identity_agent:make_agent"
WAIT = 300.0  # bounded waits: a test that would hang fails instead (the machine is slow)
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def environment(folder: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
        "MCP_IDENTITY_DIR": str(folder),
        "PATH": os.environ.get("PATH", ""),
    }


def command(*options: str) -> list[str]:
    return [sys.executable, "-m", "loomgraph.cli.main", "mcp-serve", *options]


def refunds(folder: Path) -> str:
    log = folder / "refunds.log"
    return log.read_text(encoding="utf-8") if log.exists() else ""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MCP_IDENTITY_DIR", str(tmp_path))
    return tmp_path


async def alice_waits() -> str:
    """Alice, through the Python API: a conversation she keeps in session alice-s1, and a
    refund of hers that waits for approval (its run id)."""
    from mcp_identity_agent import make_agent

    agent = make_agent()
    try:
        await agent.run("my PIN is 4921", user_id="alice", session_id="alice-s1")
        waiting = await agent.run("refund ALICE-9", user_id="alice", session_id="alice-s1")
        assert str(waiting.status) == "awaiting_approval"
        return waiting.run_id
    finally:
        await agent.aclose()


async def request_key(run_id: str) -> str:
    """The key of the request the run waits for (what `resume` names with `approve`)."""
    from loomgraph.agent.answers import pending_of
    from mcp_identity_agent import make_agent

    agent = make_agent()
    try:
        record = await agent.deps.runtime.load_run(run_id)
    finally:
        await agent.aclose()
    pending = pending_of(record) if record is not None else None
    assert pending is not None and pending.key
    return pending.key


async def approvers(run_id: str) -> list[str]:
    """Who answered the run's approvals, as its journal keeps them."""
    from mcp_identity_agent import make_agent

    agent = make_agent()
    try:
        events = [e.event async for e in agent.events(run_id)]
    finally:
        await agent.aclose()
    return [
        e.payload["approver"]
        for e in events
        if e.kind == "permission_decision" and e.payload.get("verdict") != "ask"
    ]


async def journal(user: str) -> list[Any]:
    """The runs the journal keeps for `user`."""
    from mcp_identity_agent import make_agent

    agent = make_agent()
    try:
        return list(await agent.deps.runtime.runs(user))
    finally:
        await agent.aclose()


@contextlib.asynccontextmanager
async def stdio_session(folder: Path, *options: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=command("--agent", AGENT, *options)[1:],
        env=environment(folder),
        cwd=str(TESTS),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def assert_not_found_as_unknown(
    session: ClientSession, run_id: str, *, approver: bool = False
) -> None:
    """Every resume of `run_id` fails exactly as one of a run that does not exist: for an
    approver, every resume but an answer, which reaches any user's run that waits for an
    approval (and without the request's key is refused before anything runs), and a resume
    without one, which sends such a run on only past an expired request."""
    if approver:
        for allow in (True, False):
            unkeyed = await session.call_tool("resume", {"run_id": run_id, "approve": allow})
            assert unkeyed.is_error and "key is required" in text(unkeyed), text(unkeyed)
        early = await session.call_tool("resume", {"run_id": run_id})
        assert early.is_error and "AnswerNeeded" in text(early), text(early)
    answers: list[dict[str, Any]] = [] if approver else [{"approve": True}, {"approve": False}, {}]
    for extra in (*answers, {"value": 1}):
        theirs = await session.call_tool("resume", {"run_id": run_id, **extra})
        unknown = await session.call_tool("resume", {"run_id": "no-such-run", **extra})
        assert theirs.is_error and unknown.is_error, text(theirs)
        assert text(theirs).replace(run_id, "X") == text(unknown).replace("no-such-run", "X")
        assert "alice" not in text(theirs)


# ------------------------------------------------------------------------------ stdio


async def test_stdio_another_users_run_is_not_found_but_by_an_approvers_answer(
    folder: Path,
) -> None:
    run_id = await alice_waits()
    async with stdio_session(folder, "--user", "mallory") as session:
        await assert_not_found_as_unknown(session, run_id)
    async with stdio_session(folder, "--user", "mallory", "--approver") as session:
        await assert_not_found_as_unknown(session, run_id, approver=True)
    assert refunds(folder) == ""  # alice's destructive call never ran
    (waiting,) = [r for r in await journal("alice") if r.run_id == run_id]
    assert str(waiting.status) == "awaiting_approval"


async def test_stdio_the_user_id_argument_cannot_switch_identity(folder: Path) -> None:
    await alice_waits()
    async with stdio_session(folder, "--user", "mallory") as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert "user_id" not in tools["run"].input_schema.get("properties", {})
        asked = {"prompt": "what do you know?", "user_id": "alice", "session_id": "alice-s1"}
        claimed = await session.call_tool("run", asked)
        assert claimed.is_error and "user_id" in text(claimed)
        # Said in a line, not as pydantic's report of the SDK's model ("1 validation error
        # for runArguments ... [type=value_error, input_value=...]").
        assert text(claimed).startswith("Error executing tool run: unknown argument(s) user_id: ")
        assert "validation error" not in text(claimed) and "input_value" not in text(claimed)
        wrong = await session.call_tool("approvals", {"limit": "many"})
        assert wrong.is_error and text(wrong) == (
            "Error executing tool approvals: limit: Input should be a valid integer, unable to "
            "parse string as an integer"
        ), text(wrong)
        assert "4921" not in text(claimed)
        own = await session.call_tool(
            "run", {"prompt": "what do you know?", "session_id": "alice-s1"}
        )
        assert not own.is_error
        assert "4921" not in str(own.structured_content)  # mallory's alice-s1 is her own
    assert len(await journal("mallory")) == 1
    assert len(await journal("alice")) == 2


async def test_stdio_approving_needs_the_approver_flag_and_records_the_caller(
    folder: Path,
) -> None:
    async with stdio_session(folder, "--user", "alice") as session:
        first = await session.call_tool("run", {"prompt": "refund A-1"})
        stopped: Any = first.structured_content
        assert stopped["status"] == "awaiting_approval"
        refused = await session.call_tool("resume", {"run_id": stopped["run_id"], "approve": True})
        assert refused.is_error and "approver" in text(refused)
    assert refunds(folder) == ""
    async with stdio_session(folder, "--user", "alice", "--approver") as session:
        answer = {"run_id": stopped["run_id"], "approve": True}
        key = stopped["awaiting_approval"]["key"]
        done = await session.call_tool("resume", answer | {"key": key})
        assert not done.is_error, text(done)
        finished: Any = done.structured_content
        assert finished["status"] == "completed"
    assert refunds(folder) == "A-1\n"
    assert await approvers(stopped["run_id"]) == ["alice"]


def test_stdio_refuses_to_start_without_a_user(folder: Path) -> None:
    done = subprocess.run(
        command("--agent", AGENT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment(folder),
        cwd=TESTS,
        timeout=WAIT,
    )
    assert done.returncode == 2, done.stderr
    assert "--user" in done.stderr


# ------------------------------------------------------------------------------ HTTP


def http_server(folder: Path, *options: str) -> Any:
    """`mcp-serve --http` on a loopback port; its /mcp URL once it accepts connections."""
    port = free_port()
    return served(
        command("--agent", AGENT, "--http", str(port), *options),
        port,
        environment(folder),
        folder,
        WAIT,
    )


async def add_keys() -> dict[str, str]:
    """Keys in the journal's key store: alice may approve, bob may not."""
    from mcp_identity_agent import make_agent

    agent = make_agent()
    await agent.deps.runtime.connect()
    store = open_store(agent.deps.runtime)
    try:
        alice = await store.add_key("alice", approver=True)
        bob = await store.add_key("bob")
        return {"alice": alice, "bob": bob}
    finally:
        await store.close()
        await agent.aclose()


async def revoke(key: str) -> None:
    from mcp_identity_agent import make_agent

    agent = make_agent()
    store = open_store(agent.deps.runtime)
    try:
        found = await store.key(key)
        assert found is not None
        assert await store.revoke(found.key_id) is not None
    finally:
        await store.close()
        await agent.aclose()


@contextlib.asynccontextmanager
async def http_session(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with (
        create_mcp_http_client(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_http_needs_a_valid_key_and_a_revoked_key_is_refused_at_once(
    folder: Path,
) -> None:
    keys = await add_keys()
    with http_server(folder) as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            for headers in (
                {},
                {"Authorization": "Bearer lg_not-a-key"},
                {"X-API-Key": "lg_not-a-key"},
                {"Authorization": f"Basic {keys['bob']}"},
                # Two callers claiming one request: neither is chosen.
                {"Authorization": f"Bearer {keys['bob']}", "X-API-Key": keys["alice"]},
            ):
                refused = await http.post(url, json=INIT, headers={**ACCEPT, **headers})
                assert refused.status_code == 401, (headers, refused.text)
            bob = {"Authorization": f"Bearer {keys['bob']}"}
            assert (await http.post(url, json=INIT, headers={**ACCEPT, **bob})).status_code == 200
            by_header = {"X-API-Key": keys["bob"]}
            answered = await http.post(url, json=INIT, headers={**ACCEPT, **by_header})
            assert answered.status_code == 200
            async with http_session(url, bob) as session:
                assert {t.name for t in (await session.list_tools()).tools} == {
                    "run",
                    "resume",
                    "approvals",
                }
                await revoke(keys["bob"])
                with pytest.raises(Exception):  # noqa: B017 - the transport's error, any
                    await session.list_tools()
            gone = await http.post(url, json=INIT, headers={**ACCEPT, **bob})
            assert gone.status_code == 401


async def test_http_callers_act_only_as_their_key_on_their_own_runs(folder: Path) -> None:
    run_id = await alice_waits()
    keys = await add_keys()
    with http_server(folder) as url:
        bob = {"Authorization": f"Bearer {keys['bob']}"}
        async with http_session(url, bob) as session:
            await assert_not_found_as_unknown(session, run_id)
            asked = {"prompt": "what do you know?", "user_id": "alice", "session_id": "alice-s1"}
            claimed = await session.call_tool("run", asked)
            assert claimed.is_error and "4921" not in text(claimed)
            own = await session.call_tool("run", {"prompt": "refund B-1"})
            stopped: Any = own.structured_content
            assert stopped["status"] == "awaiting_approval"
            refused = await session.call_tool(
                "resume", {"run_id": stopped["run_id"], "approve": True}
            )
            assert refused.is_error and "approver" in text(refused)
        assert refunds(folder) == ""
        assert [r.run_id for r in await journal("bob")] == [stopped["run_id"]]
        alice = {"X-API-Key": keys["alice"]}
        async with http_session(url, alice) as session:
            answer = {"run_id": run_id, "approve": True, "key": await request_key(run_id)}
            done = await session.call_tool("resume", answer)
            assert not done.is_error, text(done)
            await assert_not_found_as_unknown(session, stopped["run_id"], approver=True)  # bob's
        assert refunds(folder) == "ALICE-9\n"
        assert await approvers(run_id) == ["alice"]


async def test_http_a_session_is_its_users_only(folder: Path) -> None:
    keys = await add_keys()
    with http_server(folder) as url:
        alice = {**ACCEPT, "Authorization": f"Bearer {keys['alice']}"}
        bob = {**ACCEPT, "Authorization": f"Bearer {keys['bob']}"}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with httpx.AsyncClient(timeout=WAIT) as http:
            opened = await http.post(url, json=INIT, headers=alice)
            assert opened.status_code == 200
            sid = opened.headers["mcp-session-id"]
            version = {"mcp-protocol-version": "2025-06-18", "mcp-session-id": sid}
            sent = await http.post(url, json=initialized, headers={**alice, **version})
            assert sent.status_code == 202
            taken = await http.post(url, json=listing, headers={**bob, **version})
            assert taken.status_code == 404, taken.text
            assert (await http.post(url, json=listing, headers={**alice, **version})).is_success


def refused_to_start(folder: Path, *options: str, agent: str = AGENT) -> str:
    """What the command said when it refused to start (exit 2); fails if it served."""
    try:
        done = subprocess.run(
            command("--agent", agent, *options),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=environment(folder),
            cwd=TESTS,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"mcp-serve {' '.join(options)} started serving instead of refusing")
    assert done.returncode == 2, done.stderr
    return done.stderr


async def test_http_without_keys_is_refused_on_any_address(folder: Path) -> None:
    port = str(free_port())
    # An in-memory journal keeps no keys.
    said = refused_to_start(
        folder, "--http", port, "--host", "0.0.0.0", agent="mcp_agent:make_agent"
    )
    assert "refused" in said and "key" in said
    said = refused_to_start(folder, "--http", port, agent="mcp_agent:make_agent")
    assert "refused" in said and "key" in said
    # A journal that keeps keys, but none yet.
    said = refused_to_start(folder, "--http", port, "--host", "0.0.0.0")
    assert "refused" in said and "keys add" in said
    await add_keys()
    # Over HTTP each request's key says who calls: --user and --approver are refused.
    said = refused_to_start(folder, "--http", port, "--user", "alice")
    assert "--user" in said

"""An MCP HTTP server's 404 means a lost session only when it says so: a call the server ran is
never sent again, and a server without a GET stream does not break calls under way."""

from __future__ import annotations

import asyncio

import pytest

from loomgraph.tools import MCPServer
from loomgraph.tools.mcp.lost import answers
from mcp_tiny_http import WAIT, TinyMCP

# ------------------------------------------------------------ 1. MCP reconnect-and-resend


async def test_a_call_the_server_ran_and_answered_404_is_not_sent_again() -> None:
    """An MCP server (or the gateway in front of it) runs `record(item=x)` and answers its
    JSON-RPC error ("no such item") with HTTP 404, as a gateway mapping a tool's not-found
    error to the status does; the answer's body is a JSON-RPC error carrying the request's
    own id, so the server plainly handled the request. The user sees the call run twice on
    the server (it is sent again on a new session) and the model told the server lost its
    session. They should see it run once, and the model given the server's error: only a 404
    that is not the server's answer to the request (the SDK's own "Session not found" has
    `id: null`) means the session is gone and the call never ran."""
    with TinyMCP(not_found_after_run=frozenset({"record"})) as srv:
        mcp = MCPServer.http(srv.url, name="tiny", timeout=WAIT, start_timeout=WAIT)
        try:
            result = await mcp.call("record", {"item": "x"}, "key-1")
        finally:
            await mcp.close()
    assert [entry[1] for entry in srv.ledger] == ["x"], f"ran {len(srv.ledger)} times"
    assert "no such item" in str(result["content"])


async def test_a_server_without_a_get_stream_does_not_break_a_call_under_way() -> None:
    """An MCP server routes only `POST /mcp` and so answers the client's standing GET stream
    404 (Express's `app.post`, a gateway's route table) instead of 405. The user sees every
    call open a new session, and a call made while another is under way break that one: the
    server ran `hold(item=slow)`, but the model is told `mcp_server_error ... no longer
    knows the session` (inviting it to call again). They should see the running call's
    answer: a 404 to the GET stream says nothing of the session a POST uses, and a
    connection another call still reads must not be closed under it."""
    with TinyMCP(get_status=404) as srv:
        mcp = MCPServer.http(srv.url, name="tiny", timeout=WAIT, start_timeout=WAIT)
        try:
            await mcp.start()
            slow = asyncio.create_task(mcp.call("hold", {"item": "slow"}, "k-slow"))
            assert await asyncio.to_thread(srv.holding.wait, WAIT), "hold never ran"
            other = await mcp.call("record", {"item": "other"}, "k-other")
            srv.release.set()
            held = await asyncio.wait_for(slow, WAIT)
        finally:
            srv.release.set()
            await mcp.close()
    assert not other.get("is_error"), other
    assert [entry[1] for entry in srv.ledger] == ["slow", "other"]
    assert not held.get("is_error"), f"a call the server ran was reported failed: {held}"


async def test_a_lost_session_does_not_cut_a_call_under_way_on_it() -> None:
    """An MCP HTTP server answers one call 404 `Session not found` (`id: null`, as the SDK's
    server does for a session it no longer knows) while another call, `hold(item=slow)`, is
    running on the same session. The refused call is sent again on a new session (it never
    ran); the running one must not be cut by that reconnection: its connection is retired
    for new calls and ended (DELETE) only once its last call has ended."""
    with TinyMCP(lost_once=frozenset({"record"})) as srv:
        mcp = MCPServer.http(srv.url, name="tiny", timeout=WAIT, start_timeout=WAIT)
        try:
            await mcp.start()
            slow = asyncio.create_task(mcp.call("hold", {"item": "slow"}, "k-slow"))
            assert await asyncio.to_thread(srv.holding.wait, WAIT), "hold never ran"
            other = await mcp.call("record", {"item": "other"}, "k-other")
            first, second = srv.sessions
            assert first not in srv.deleted, "the session of a call under way was ended"
            srv.release.set()
            held = await asyncio.wait_for(slow, WAIT)
            assert first in srv.deleted, "the retired session was not ended after its call"
        finally:
            srv.release.set()
            await mcp.close()
    assert not other.get("is_error"), other
    assert [entry[1:] for entry in srv.ledger] == [("slow", "k-slow"), ("other", "k-other")]
    assert not held.get("is_error"), f"a call the server ran was reported failed: {held}"
    assert second in srv.deleted


async def test_a_server_without_a_get_stream_keeps_its_session() -> None:
    """A server that answers the standing GET stream 404 (it routes only `POST /mcp`) still
    knows the session its POSTs use: two calls, one after the other, use one session."""
    with TinyMCP(get_status=404) as srv:
        mcp = MCPServer.http(srv.url, name="tiny", timeout=WAIT, start_timeout=WAIT)
        try:
            first = await mcp.call("record", {"item": "a"}, "k-a")
            assert await asyncio.to_thread(srv.get_again.wait, WAIT), "no GET stream tried"
            second = await mcp.call("record", {"item": "b"}, "k-b")
        finally:
            await mcp.close()
    assert not first.get("is_error") and not second.get("is_error"), (first, second)
    assert len(srv.sessions) == 1, f"{len(srv.sessions)} sessions opened"


@pytest.mark.parametrize(
    ("answer", "answered"),
    [
        (b'{"jsonrpc":"2.0","id":7,"error":{"code":-32002,"message":"no such item"}}', True),
        (b'{"jsonrpc":"2.0","id":"7","result":{}}', True),  # the id as a string: a doubt
        (b'[{"jsonrpc":"2.0","id":7,"result":{}}]', True),
        (
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}',
            False,
        ),
        (b'{"jsonrpc":"2.0","id":8,"result":{}}', False),
        (b'{"jsonrpc":"2.0","id":7,"method":"ping"}', False),
        (b"Not Found", False),
        (b"", False),
    ],
)
def test_only_a_json_rpc_answer_to_the_request_s_id_is_an_answer(
    answer: bytes, answered: bool
) -> None:
    """What a 404's body says: the server's answer to the request (it handled it), or not
    (the session is lost, and the request never ran)."""
    request = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"record"}}'
    assert answers(answer, request) is answered

"""What an MCP server sends becomes text a model request can carry, as a local tool's does."""

from __future__ import annotations

import base64
import json
import math

import pytest
from mcp import types

from loomgraph.tools.mcp.convert import to_result


def test_a_servers_text_with_lone_surrogates_is_shown_escaped() -> None:
    """A file name read with `os.fsdecode` holds a lone surrogate, a binary file NULs: what a
    server's result holds must still encode as UTF-8 (the SDK's own JSON reader refuses lone
    surrogates; a session of another transport or SDK may not)."""
    for error in (False, True):
        result = types.CallToolResult(
            content=[types.TextContent(type="text", text="caf\udce9.txt\x00")],
            structuredContent={"name": "caf\udce9"},
            isError=error,
        )
        content = to_result(result)["content"]
        content.encode("utf-8")  # raised UnicodeEncodeError
        assert "caf\\udce9.txt\\x00" in content
        assert json.dumps(content, ensure_ascii=False).encode("utf-8")


async def test_a_listed_tool_json_cannot_carry_is_left_out_not_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tool whose schema holds NaN (which the SDK's JSON reader takes) would fail every
    model request: it is left out with a warning, as a tool with an unusable schema is; the
    server's other tools are offered (the whole server failed to start)."""
    import mcp_tiny_http
    from loomgraph.tools import MCPServer

    schema = {"type": "object", "properties": {"ratio": {"type": "number", "default": math.nan}}}
    bad = {"name": "broken", "description": "Break.", "inputSchema": schema}
    monkeypatch.setattr(mcp_tiny_http, "TOOLS", [*mcp_tiny_http.TOOLS, bad])
    with mcp_tiny_http.TinyMCP() as srv:
        server = MCPServer.http(
            srv.url, name="tiny", timeout=mcp_tiny_http.WAIT, start_timeout=mcp_tiny_http.WAIT
        )
        try:
            await server.start()
            names = {spec["name"] for spec in server.specs()}
        finally:
            await server.close()
    assert "record" in names and "broken" not in names, names


@pytest.mark.parametrize("size", [0, 1, 2, 3, 8, 1000])
def test_audio_and_blobs_are_shown_with_their_byte_counts(size: int) -> None:
    """An 8-byte audio was shown as 9 bytes, a 2-byte blob as 3: the base64 padding was
    counted as data."""
    data = base64.b64encode(bytes(size)).decode()
    blob = types.BlobResourceContents(uri="file:///x.bin", mimeType="application/x", blob=data)
    result = types.CallToolResult(
        content=[
            types.AudioContent(type="audio", data=data, mimeType="audio/wav"),
            types.EmbeddedResource(type="resource", resource=blob),
        ]
    )
    assert to_result(result)["content"].splitlines() == [
        f"[audio: audio/wav, {size} bytes]",
        f"[resource file:///x.bin: application/x, {size} bytes]",
    ]

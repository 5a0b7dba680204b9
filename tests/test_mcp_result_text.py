"""What an MCP server sends becomes text a model request can carry, as a local tool's result does."""

from __future__ import annotations

import json

from mcp import types

from loomgraph.tools.mcp.convert import to_result


def test_a_servers_text_with_lone_surrogates_is_shown_escaped() -> None:
    """A file name read with `os.fsdecode` holds a lone surrogate; JSON carries it as
    `\\udce9`, the SDK decodes it back: the result must still encode as UTF-8."""
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

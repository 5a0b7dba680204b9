"""How an MCP server is reached: a stdio subprocess or a streamable HTTP endpoint. The `mcp`
SDK is imported only when a connection is opened."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Http", "Stdio"]


@dataclass(frozen=True, slots=True)
class Stdio:
    """A server run as a subprocess, speaking MCP over its stdin and stdout."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str] | None
    cwd: str | None

    def describe(self) -> str:
        """How the server is reached, for messages."""
        return " ".join((self.command, *self.args))

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Any]:
        """The SDK's read and write streams, open for as long as the context lasts."""
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.command, args=list(self.args), env=dict(self.env or {}), cwd=self.cwd
        )
        async with stdio_client(params, errlog=sys.stderr) as streams:
            yield streams


@dataclass(frozen=True, slots=True)
class Http:
    """A server reached over streamable HTTP, with the headers each request carries."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """How the server is reached, for messages."""
        return self.url

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Any]:
        """The SDK's read and write streams, open for as long as the context lasts."""
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async with (
            create_mcp_http_client(headers=dict(self.headers)) as client,
            streamable_http_client(self.url, http_client=client) as streams,
        ):
            yield streams

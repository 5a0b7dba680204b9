"""How an MCP server is reached: a stdio subprocess or a streamable HTTP endpoint. The `mcp`
SDK is imported only when a connection is opened.

An endpoint's URL may carry credentials (`https://user:pw@host/mcp?api_key=...`): it is
described, in every message and repr, with its user information, every query value and its
fragment as `***`, and those values are masked in the errors its connection raises too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["MASK", "Http", "Stdio"]

MASK = "***"


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

    def redact(self, text: str) -> str:
        """`text` as it may be shown (a command line keeps no secret: `env` does)."""
        return text

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
        """How the server is reached, for messages: the URL with its user information, query
        values and fragment masked."""
        scheme, netloc, path, query, fragment = urlsplit(self.url)
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        if query:
            query = "&".join(
                f"{key}={MASK}" if sep else MASK
                for key, sep, _ in (part.partition("=") for part in query.split("&"))
            )
        return urlunsplit((scheme, netloc, path, query, MASK if fragment else ""))

    def redact(self, text: str) -> str:
        """`text` (an error of the connection, say) with the URL and each credential in it
        masked as `describe` masks them."""
        text = text.replace(self.url, self.describe())
        for secret in sorted(_credentials(self.url), key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

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


def _credentials(url: str) -> set[str]:
    """What `Http.describe` masks in `url`, as written and percent-decoded (values shorter
    than 3 characters are left: they would mask ordinary text)."""
    _, netloc, _, query, fragment = urlsplit(url)
    found = [fragment]
    if "@" in netloc:
        found.extend(netloc.rpartition("@")[0].split(":", 1))
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        found.append(value if sep else key)
    return {text for raw in found for text in (raw, unquote(raw)) if len(text) >= 3}

"""How an MCP server is reached: a stdio subprocess or a streamable HTTP endpoint. The `mcp`
SDK is imported only when a connection is opened.

How a server is reached may carry secrets: an argument (`--api-key=...`), a URL's user
information, path, query or fragment. What a run shows (the model, the journal, events,
errors and reprs) names it by its `label` only: the program's base name, or the URL's
scheme, host and port; `redact` masks those parts in the errors its connection raises.
`describe` (the whole command line or URL) is for the process's debug log only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

from loomgraph.tools.mcp.lost import OnLost, lost_session

if TYPE_CHECKING:
    import httpx2

__all__ = ["MASK", "Http", "Stdio", "client_timeout"]

MASK = "***"
SECRET_CHARS = 8
"""An argument or URL path segment this long or longer is masked in errors: shorter ones
(`-m`, `mcp`) are ordinary words, and masking them would garble the text."""


def client_timeout(seconds: float | None) -> httpx2.Timeout:
    """The HTTP client's timeouts for a server whose calls may take `seconds` (None: no
    limit): connecting, sending and waiting for a pooled connection within `seconds`; reading
    as long, and at least the SDK's 300 s, which the standing stream (the server's own
    messages: list changes) may be quiet for between two of them (the SDK gives it up after
    two read timeouts in a row)."""
    import httpx2
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT

    if seconds is None:
        return httpx2.Timeout(None)
    return httpx2.Timeout(seconds, read=max(seconds, MCP_DEFAULT_SSE_READ_TIMEOUT))


@dataclass(frozen=True, slots=True)
class Stdio:
    """A server run as a subprocess, speaking MCP over its stdin and stdout."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str] | None
    cwd: str | None

    def describe(self) -> str:
        """The whole command line, for the process's debug log only (it may carry a key)."""
        return " ".join((self.command, *self.args))

    def label(self) -> str:
        """How the server is named where a run shows it: the program, without its arguments."""
        program = re.split(r"[\\/]", self.command)[-1]
        return f"{program} (stdio)"

    def redact(self, text: str) -> str:
        """`text` (an error of the connection, say) with the command line and each argument
        of `SECRET_CHARS` or more (or its value after `=`) masked."""
        line = self.describe()
        if len(line) >= SECRET_CHARS:  # (a shorter one, `o` or `ls`, is in any text)
            text = text.replace(line, self.label())
        secrets = {part for arg in self.args for part in (arg, arg.partition("=")[2])}
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= SECRET_CHARS:
                text = text.replace(secret, MASK)
        return text

    @contextlib.asynccontextmanager
    async def open(self, on_lost: OnLost, timeout: float | None) -> AsyncIterator[Any]:
        """The SDK's read and write streams, open for as long as the context lasts (a stdio
        session ends only with its process: `on_lost` is never called; a pipe has no
        `timeout` of its own)."""
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.command, args=list(self.args), env=dict(self.env or {}), cwd=self.cwd
        )
        async with stdio_client(params, errlog=_child_stderr()) as streams:
            yield streams


def _child_stderr() -> TextIO:
    """Where a stdio server writes its stderr: this process's, as a file the child can be
    given (it needs a descriptor). Under a capture that replaced `sys.stderr` with an object
    of none (`redirect_stderr(io.StringIO())`, a GUI, a log handler), the stderr the process
    started with, else nowhere: the host's stderr is no fault of the server's."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            continue
    return _devnull()


@functools.cache
def _devnull() -> TextIO:
    return open(os.devnull, "w")


@dataclass(frozen=True, slots=True)
class Http:
    """A server reached over streamable HTTP, with the headers each request carries."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The URL with its user information, query values and fragment masked, for the
        process's debug log only (its path is shown, and may carry a token)."""
        scheme, netloc, path, query, fragment = urlsplit(self.url)
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        if query:
            query = "&".join(
                f"{key}={MASK}" if sep else MASK
                for key, sep, _ in (part.partition("=") for part in query.split("&"))
            )
        return urlunsplit((scheme, netloc, path, query, MASK if fragment else ""))

    def label(self) -> str:
        """How the server is named where a run shows it: the URL's scheme, host and port
        (`***@` when it carries user information), without its path, query or fragment."""
        scheme, netloc, _, _, _ = urlsplit(self.url)
        _, at, host = netloc.rpartition("@")
        return f"{scheme}://{MASK + at if at else ''}{host}"

    def redact(self, text: str) -> str:
        """`text` (an error of the connection, say) with the URL shown as `label` and each
        credential in it (user information, path segments, query values, fragment) masked."""
        text = text.replace(self.url, self.label()).replace(self.describe(), self.label())
        for secret in sorted(_credentials(self.url), key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    @contextlib.asynccontextmanager
    async def open(self, on_lost: OnLost, timeout: float | None) -> AsyncIterator[Any]:
        """The SDK's read and write streams, open for as long as the context lasts;
        `on_lost` is told of each 404 that says the server lost the session (lost.py). Its
        requests wait as `client_timeout(timeout)` says (the server's `timeout`), not the
        SDK's 30 s and 300 s."""
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async def answered(response: Any) -> None:
            # The SDK passes a 404 on as a JSON-RPC error of the call and goes on using the
            # session: when the server no longer knows it, the connection must be made again.
            lost = await lost_session(response)
            if lost is not None:
                on_lost(lost)

        limits = client_timeout(timeout)
        client = create_mcp_http_client(headers=dict(self.headers), timeout=limits)
        client.event_hooks["response"].append(answered)  # beside any the SDK set
        async with client, streamable_http_client(self.url, http_client=client) as streams:
            yield streams


def _credentials(url: str) -> set[str]:
    """What `Http.redact` masks in `url`, as written and percent-decoded (values shorter
    than 3 characters, and path segments shorter than `SECRET_CHARS`, are left: they would
    mask ordinary text)."""
    _, netloc, path, query, fragment = urlsplit(url)
    found = [fragment, *(part for part in path.split("/") if len(part) >= SECRET_CHARS)]
    if "@" in netloc:
        found.extend(netloc.rpartition("@")[0].split(":", 1))
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        found.append(value if sep else key)
    return {text for raw in found for text in (raw, unquote(raw)) if len(text) >= 3}

"""A client that hangs up before its request's body has come is no error of the server's.

Found by probing the server: `Content-Length: 1000`, four bytes, then the connection closed.
On `POST /v1/runs` (with a key) the server logged "internal error (error id …)" with a
`ClientDisconnect` traceback; on `POST /ui/login` (no key needed) the exception escaped to
uvicorn ("Exception in ASGI application", some forty lines): anyone reaching the port could
fill the log with made-up internal errors. Now nothing is logged and nothing escapes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message

from test_serve_api import served


async def hang_up(app: Any, path: str, headers: dict[str, str]) -> list[Message]:
    """POST `path` to the app saying 1000 bytes, send four, then hang up; what it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", b"1000"), (b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    arriving: list[Message] = [{"type": "http.request", "body": b'{"in', "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("path", "content_type", "signed"),
    [
        ("/v1/runs", "application/json", True),
        ("/ui/login", "application/x-www-form-urlencoded", False),
    ],
)
async def test_a_client_hanging_up_mid_body_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, content_type: str, signed: bool
) -> None:
    async with served(tmp_path) as s:
        headers = {"Content-Type": content_type, **(s.auth("dave") if signed else {})}
        with caplog.at_level(logging.INFO):
            sent = await hang_up(s.app, path, headers)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        [start] = [m for m in sent if m["type"] == "http.response.start"]
        assert start["status"] == 400
        assert (await s.get("dave", "/v1/runs")).json()["runs"] == []  # no run was started

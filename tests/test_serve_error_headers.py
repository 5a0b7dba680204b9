"""An answer the app never wrote, Starlette's own 500 for an endpoint that raises, carries the
security headers as every other answer does, and tells the client nothing of the exception.
Served by a real uvicorn on a loopback port, in this process (`uvicorn_serving`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from loomgraph.serve import create_app
from serve_agent import make_agent

SECRET = "the-secret-in-the-exception"


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    """`app` served by uvicorn on 127.0.0.1 (a free port; `X-Forwarded-Proto` trusted from
    loopback, as `loomgraph serve` does by default) while the block runs; its base URL. The
    socket listens before the server starts, so a request sent at once waits to be accepted
    instead of being refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def assert_security_headers(answer: httpx.Response) -> None:
    """The headers every answer has (`no-store` on all but the viewer's static files)."""
    h = answer.headers
    assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), dict(h)
    assert h.get("x-frame-options") == "DENY", dict(h)
    assert h.get("x-content-type-options") == "nosniff", dict(h)
    assert h.get("referrer-policy") == "same-origin", dict(h)
    if not answer.request.url.path.startswith("/ui/static/") or answer.status_code >= 400:
        assert h.get("cache-control") == "no-store", dict(h)


async def test_starlettes_500_for_an_endpoint_that_raises_has_the_security_headers(
    tmp_path: Path,
) -> None:
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent)

    async def boom(request: Request) -> Response:
        raise RuntimeError(SECRET)

    app.add_route("/boom", boom)  # beside the app's own routes, before the first request
    try:
        async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200
            failed = await http.get("/boom")
            assert failed.status_code == 500
            assert failed.text == "Internal Server Error"  # no traceback, no message
            assert SECRET not in failed.text and "Traceback" not in failed.text
            assert_security_headers(failed)
            # Over https (a trusted proxy on loopback says so) it is HSTS too.
            proxied = await http.get("/boom", headers={"X-Forwarded-Proto": "https"})
            assert proxied.status_code == 500
            assert_security_headers(proxied)
            assert proxied.headers.get("strict-transport-security") == "max-age=31536000"
    finally:
        await agent.aclose()


async def test_a_static_files_refusal_is_not_stored(tmp_path: Path) -> None:
    """The viewer's static files may be cached, but a 404 (or 405) under `/ui/static/` was
    sent without `no-store`: a cache could keep the refusal after the file is there."""
    agent = make_agent(str(tmp_path / "journal.db"))
    try:
        async with (
            uvicorn_serving(create_app(agent)) as url,
            httpx.AsyncClient(base_url=url) as http,
        ):
            served = await http.get("/ui/static/style.css")
            assert served.status_code == 200
            assert served.headers.get("cache-control") != "no-store"
            for answer in (
                await http.get("/ui/static/no-such-file.js"),
                await http.post("/ui/static/style.css"),
            ):
                assert answer.status_code in (404, 405), answer.status_code
                assert_security_headers(answer)
    finally:
        await agent.aclose()

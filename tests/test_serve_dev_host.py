"""`--dev` (`create_app(dev=True)`) answers no request whose Host is not this server on
loopback, whatever the route: the health check, the OpenAPI document, the viewer's static
files and sign-in page, unknown paths, as the API. A page of another site that made its
name resolve to 127.0.0.1 (DNS rebinding) reaches the server under that name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from loomgraph.serve import create_app
from serve_agent import make_agent
from test_serve_error_headers import assert_security_headers, uvicorn_serving

OPEN = ["/healthz", "/openapi.json", "/ui/static/htmx.min.js", "/ui/login"]
EVERY = [*OPEN, "/", "/v1/runs", "/ui", "/no/such/page"]


async def test_dev_mode_refuses_a_foreign_host_on_every_route(tmp_path: Path) -> None:
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent, dev=True, host="127.0.0.1")
    try:
        async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            port = url.rsplit(":", 1)[1]
            foreign = ["evil.example", f"evil.example:{port}", "localhost", "127.0.0.1:1"]
            for host in foreign:
                for path in EVERY:
                    refused = await http.get(path, headers={"Host": host, "X-User-Id": "eve"})
                    assert refused.status_code == 403, (host, path, refused.status_code)
                    error = refused.json()["error"]
                    assert error["type"] == "forbidden" and host in error["message"], error
                    assert_security_headers(refused)
                posted = await http.post("/ui/login", data={"user": "eve"}, headers={"Host": host})
                assert posted.status_code == 403 and "set-cookie" not in posted.headers
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
                for path in OPEN:
                    answered = await http.get(path, headers={"Host": host})
                    assert answered.status_code == 200, (host, path, answered.text)
                mine = await http.get("/v1/runs", headers={"Host": host, "X-User-Id": "eve"})
                assert mine.status_code == 200 and mine.json()["runs"] == []
    finally:
        await agent.aclose()


async def test_without_dev_mode_any_host_is_answered(tmp_path: Path) -> None:
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent)  # API keys: a rebinding page holds none (the cookie is per name)
    try:
        async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            for path in OPEN:
                answered = await http.get(path, headers={"Host": "api.example"})
                assert answered.status_code == 200, (path, answered.text)
    finally:
        await agent.aclose()


async def test_dev_mode_closes_a_websocket_from_a_foreign_host(tmp_path: Path) -> None:
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent, dev=True, host="127.0.0.1")
    try:
        for host, code in ((b"evil.example:8000", 1008), (b"127.0.0.1:8000", 1000)):
            scope = {
                "type": "websocket",
                "path": "/v1/ws",  # no such route: the router closes it with 1000
                "raw_path": b"/v1/ws",
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", host)],
                "server": ("127.0.0.1", 8000),
                "scheme": "ws",
                "subprotocols": [],
                "state": {},
            }
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "websocket.connect"}

            async def send(message: dict[str, Any], into: list[dict[str, Any]] = sent) -> None:
                into.append(message)

            await app(scope, receive, send)
            assert [(m["type"], m.get("code")) for m in sent] == [("websocket.close", code)]
    finally:
        await agent.aclose()

"""`Strict-Transport-Security` on every answer over https, as the server sees the request
(served over TLS, or a proxy it trusts says `X-Forwarded-Proto: https`), and never over plain
http: a browser would then refuse plain http to this host for a year."""

from __future__ import annotations

from pathlib import Path

import httpx

from loomgraph.serve import create_app
from serve_agent import make_agent
from test_serve_error_headers import assert_security_headers, uvicorn_serving

HSTS = "max-age=31536000"  # no includeSubDomains, no preload: the parent domain is not ours
PATHS = ["/healthz", "/openapi.json", "/", "/ui/login", "/ui/static/htmx.min.js", "/v1/runs"]


async def test_hsts_over_https_behind_a_trusted_proxy_and_not_over_http(tmp_path: Path) -> None:
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent)
    try:
        async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            https = {"X-Forwarded-Proto": "https"}
            for path in [*PATHS, "/no/such/page"]:
                plain = await http.get(path)
                assert plain.status_code in (200, 303, 401, 404), (path, plain.status_code)
                assert "strict-transport-security" not in plain.headers, path
                secure = await http.get(path, headers=https)
                assert secure.status_code == plain.status_code, path
                assert secure.headers.get("strict-transport-security") == HSTS, path
            refused = await http.get("/v1/runs", headers=https)
            assert refused.status_code == 401 and refused.headers["strict-transport-security"]
            assert_security_headers(refused)
    finally:
        await agent.aclose()


async def test_hsts_when_the_server_itself_is_reached_over_https(tmp_path: Path) -> None:
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent)
    try:
        for scheme, expected in (("https", HSTS), ("http", None)):
            transport = httpx.ASGITransport(app=app)  # the scope's scheme is the URL's
            async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://t") as http:
                for path in PATHS:
                    answer = await http.get(path)
                    assert answer.headers.get("strict-transport-security") == expected, path
    finally:
        await agent.aclose()

"""`create_app(agent, auth=...)`: the ASGI app serving an agent's API and run viewer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from loomgraph.agent.agent import Agent
from loomgraph.agent.fleet import fleet_queue
from loomgraph.serve.api import ENDPOINTS, Json, api_routes
from loomgraph.serve.auth import Auth, api_key_auth, dev_auth
from loomgraph.serve.hub import RunHub
from loomgraph.serve.service import Service
from loomgraph.serve.store import ServeStore, open_store
from loomgraph.serve.ui import ui_routes

__all__ = ["create_app", "openapi"]

_STATUS_TEXT = {
    400: "bad input",
    401: "not authenticated",
    403: "lacks the approver role",
    404: "no such run (or not the caller's)",
    409: "run conflict or approval already answered",
    413: "body too large",
    415: "body not declared as JSON",
    422: "validation failed",
    429: "budget exhausted",
}


def openapi(title: str) -> dict[str, Any]:
    """The API's OpenAPI document, from the route table."""
    error = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for method, path, _, status, summary in ENDPOINTS:
        responses: dict[str, Any] = {str(status): {"description": "success"}}
        for code, text in _STATUS_TEXT.items():
            responses[str(code)] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("run_id", "call_id", "seq")
            if "{" + name + "}" in path
        ]
        paths.setdefault(path, {})[method.lower()] = {
            "summary": summary,
            "parameters": params,
            "responses": responses,
            "security": [{"apiKey": []}],
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {"Error": error},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def create_app(
    agent: Agent,
    auth: Auth | None = None,
    *,
    dev: bool = False,
    host: str = "127.0.0.1",
    store: ServeStore | None = None,
    poll_interval: float = 0.5,
    max_body: int = 1 << 20,
    fleet: bool = False,
) -> Starlette:
    """An ASGI app serving `agent`: the `/v1` API, the `/ui` viewer, `/openapi.json`,
    `/healthz`.

    `auth` maps a request to the caller (a `Caller`, a user id, or None); by default API keys
    stored (hashed) beside the agent's journal. `dev=True` also trusts an `X-User-Id` header,
    and is refused (`DevModeRefused`) unless `host`, where the server listens, is loopback.
    `fleet=True` submits runs to the worker fleet (`agent.submit`; docs/scaling.md) instead
    of driving them in this process; answers and cancels go through the fleet too.
    """
    if fleet:
        fleet_queue(agent.deps.runtime)  # FleetNeedsPostgres now, not at the first request
    store = store or open_store(agent.deps.runtime)
    chosen = auth or api_key_auth(store)
    if dev:
        chosen = dev_auth(host, chosen)
    service = Service(
        agent,
        store,
        chosen,
        RunHub(),
        poll_interval=poll_interval,
        max_body=max_body,
        dev=dev,
        fleet=fleet,
    )
    spec = openapi(f"loomgraph agent ({agent.graph.name})")

    async def healthz(request: Request) -> Response:
        return Json({"status": "ok", "graph": agent.graph.name})

    async def openapi_json(request: Request) -> Response:
        return Json(spec)

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui", status_code=303)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return JSONResponse({"error": {"type": kind, "message": detail}}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connect = getattr(agent.deps.runtime, "connect", None)
        if connect is not None:  # the journal's tables exist before the store reads them
            await connect()
        try:
            yield
        finally:
            await service.hub.close()
            await store.close()

    routes: list[Any] = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/openapi.json", openapi_json),
        *api_routes(service),
        *ui_routes(service),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.service = service
    return app

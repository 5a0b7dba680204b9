"""`create_app(agent, auth=...)`: the ASGI app serving an agent's API and run viewer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp

from loomgraph._storage.seconds import checked_seconds
from loomgraph.agent.agent import Agent
from loomgraph.agent.fleet import fleet_queue
from loomgraph.agent.repeating import repeat
from loomgraph.serve.api import Json, api_routes
from loomgraph.serve.auth import Auth, LoopbackHostOnly, api_key_auth, dev_auth
from loomgraph.serve.expiry import send_on_expired
from loomgraph.serve.headers import SecurityHeaders, content_security_policy
from loomgraph.serve.hub import RunHub
from loomgraph.serve.openapi import openapi
from loomgraph.serve.service import Service
from loomgraph.serve.store import ServeStore, open_store
from loomgraph.serve.ui import ui_routes

log = logging.getLogger("loomgraph.serve")

__all__ = ["create_app"]


class _App(Starlette):
    """Starlette with `SecurityHeaders` around its whole middleware stack. Starlette puts its
    `ServerErrorMiddleware` outside the middleware it is given, so a header middleware among
    them never sees the 500 that one sends for an endpoint that raised."""

    def __init__(self, *, csp: str, **options: Any) -> None:
        self.csp = csp
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), csp=self.csp)


def _allowed(request: Request) -> str:
    """The methods the request's path takes, for a 405's `Allow`: those of every route
    matching it (each method is its own route; Starlette's 405 names the first one's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


@contextlib.contextmanager
def _on_shutdown_signal(shut_down: Callable[[], None]) -> Iterator[None]:
    """While served: SIGTERM and SIGINT, which the server (uvicorn) takes as "shut down",
    also call `shut_down` at once. The server runs the lifespan's shutdown only once every
    connection has closed, and an event stream stays open while its run goes on: the runs
    must be cancelled, and the streams ended, before. The server's own handler still runs.
    Nothing is done where no server handles these signals (another thread, the default
    handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    chained: dict[signal.Signals, tuple[Any, Any]] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(shut_down)
            previous(signum, frame)

        signal.signal(sig, handler)
        chained[sig] = (previous, handler)
    try:
        yield
    finally:
        for caught, (previous, handler) in chained.items():
            if signal.getsignal(caught) is handler:
                signal.signal(caught, previous)


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
    expiry_seconds: float = 5.0,
) -> Starlette:
    """An ASGI app serving `agent`: the `/v1` API, the `/ui` viewer, `/openapi.json`,
    `/healthz`.

    `auth` maps a request to the caller (a `Caller`, a user id, or None); by default API keys
    stored (hashed) beside the agent's journal. `dev=True` also trusts an `X-User-Id` header,
    and is refused (`DevModeRefused`) unless `host`, where the server listens, is loopback.
    `fleet=True` submits runs to the worker fleet (`agent.submit`; docs/scaling.md) instead
    of driving them in this process; answers and cancels go through the fleet too. Every
    `expiry_seconds` the server sends on the runs it drives whose approval request expired
    (`serve.expiry`; with a fleet, its workers do).
    """
    checked_seconds("expiry_seconds", expiry_seconds, most=86400.0)  # now, not at startup
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
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        if status == 405:
            headers["Allow"] = _allowed(request)
        body = {"error": {"type": kind, "message": detail}}
        return JSONResponse(body, status_code=status, headers=headers)

    closing: list[asyncio.Task[None]] = []

    def shut_down() -> None:  # told to stop: cancel the runs, end the event streams
        if not closing:
            closing.append(asyncio.ensure_future(service.hub.close()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The agent's connections are closed here, in the loop they were made in: a pool
        # left for after the server's loop ended cannot be closed any more.
        async with contextlib.AsyncExitStack() as closed:
            closed.push_async_callback(agent.aclose)
            connect = getattr(agent.deps.runtime, "connect", None)
            if connect is not None:  # the journal's tables exist before the store reads them
                await connect()
            stop = asyncio.Event()
            expire = functools.partial(send_on_expired, service)
            sweep = asyncio.create_task(repeat(expire, expiry_seconds, stop, log))
            try:
                with _on_shutdown_signal(shut_down):
                    yield
            finally:
                stop.set()
                await sweep
                await asyncio.gather(*closing)
                await service.hub.close()
                await store.close()

    routes: list[Any] = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/openapi.json", openapi_json),
        *api_routes(service),
        *ui_routes(service),
    ]
    # (The security headers wrap all of this, the Host check included: `_App`.)
    app = _App(
        csp=content_security_policy(),
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(LoopbackHostOnly)] if dev else [],
    )
    app.state.service = service
    return app

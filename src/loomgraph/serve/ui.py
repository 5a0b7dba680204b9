"""The run viewer at `/ui`: server-rendered pages (Jinja2) kept live by the vendored htmx.

Pages poll small fragments while a run is live; a fragment that has nothing new answers 204
(htmx then leaves the page alone, so nothing jumps), and one whose run changed status asks
for a reload (`HX-Refresh`). Forms that change something are sent by htmx only: a POST
without the `HX-Request` header is refused, which a cross-site form cannot add.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from loomgraph.agent.checkpoints import diff
from loomgraph.agent.run_events import journal_events, run_is_live
from loomgraph.protocols import RunStatus
from loomgraph.serve.auth import (
    DEV_COOKIE,
    KEY_COOKIE,
    Caller,
    authenticate,
    refuse_foreign_host,
)
from loomgraph.serve.errors import (
    BadRequest,
    ServeError,
    Unauthorized,
    internal_message,
    message_of,
    status_of,
)
from loomgraph.serve.pages import HERE, Page, escape, read_form, render, shown, text_of
from loomgraph.serve.run_pages import cursor_number
from loomgraph.serve.service import Service
from loomgraph.serve.ui_approvals import approvals_page, approve, card_of, go_on
from loomgraph.serve.views import run_json

__all__ = ["ui_routes"]

# The runs page shows this many runs, and links to the next (older) page.
PAGE_ROWS = 100


# ---------------------------------------------------------------------- runs page


async def runs_page(request: Request, service: Service, caller: Caller) -> Response:
    return render(request, "runs.html", **await _rows_context(request, service, caller))


async def runs_rows(request: Request, service: Service, caller: Caller) -> Response:
    return render(request, "rows.html", **await _rows_context(request, service, caller))


async def _rows_context(request: Request, service: Service, caller: Caller) -> dict[str, Any]:
    status = request.query_params.get("status") or None
    graph = request.query_params.get("graph") or None
    cursor = request.query_params.get("cursor") or None
    page = await service.runs(caller, status=status, graph=graph, limit=PAGE_ROWS, cursor=cursor)
    filters = f"status={quote(status or '')}&graph={quote(graph or '')}"
    return {
        "caller": caller,
        "runs": [run_json(r) for r in page.runs],
        "statuses": [s.value for s in RunStatus],
        "status": status or "",
        "graph": graph or "",
        "graphs": [service.agent.graph.name],
        # This page's query (its rows refresh as this page's), the first page's, the next's.
        "query": filters + (f"&cursor={quote(cursor)}" if cursor else ""),
        "newest": f"/ui?{filters}" if cursor else "",
        "older": f"/ui?{filters}&cursor={quote(page.cursor)}" if page.cursor else "",
    }


# ---------------------------------------------------------------------- one run


async def _run_context(service: Service, caller: Caller, run_id: str) -> dict[str, Any]:
    record = await service.run(caller, run_id)
    runtime = service.agent.deps.runtime
    transitions = await runtime.transitions(run_id)
    live = await run_is_live(runtime, record)
    events = journal_events(record, transitions, await runtime.effects(run_id), stopped=not live)
    # While an answer is being acted on the run still rests as it was: no card to answer again.
    return {
        "caller": caller,
        "run": run_json(record, detail=True),
        "live": live,
        "events": events,
        "count": len(events),
        "last_seq": transitions[-1].seq if transitions else 0,
        "svg": await service.run_svg(caller, run_id),
        "card": None if live else card_of(record),
    }


async def run_page(request: Request, service: Service, caller: Caller) -> Response:
    context = await _run_context(service, caller, request.path_params["run_id"])
    return render(request, "run.html", **context)


async def run_live(request: Request, service: Service, caller: Caller) -> Response:
    context = await _run_context(service, caller, request.path_params["run_id"])
    if context["run"]["status"] != request.query_params.get("status"):
        return Response(status_code=200, headers={"HX-Refresh": "true"})
    if str(context["count"]) == request.query_params.get("n"):
        return Response(status_code=204)  # nothing new: the page stays as it is
    return render(request, "live.html", **context)


async def checkpoint(request: Request, service: Service, caller: Caller) -> Response:
    run_id = request.path_params["run_id"]
    raw = request.query_params.get("seq", "0")
    seq = cursor_number(raw)  # ASCII digits within the journal's integers
    if seq is None:
        raise BadRequest(f"seq must be a number, got {raw!r}")
    state = await service.state(caller, run_id, seq)
    before = await service.state(caller, run_id, seq - 1) if seq > 0 else {}
    changes = diff(before, state) if seq > 0 else {}
    return render(request, "checkpoint.html", run_id=run_id, seq=seq, state=state, changes=changes)


# ---------------------------------------------------------------------- actions


async def fork(request: Request, service: Service, caller: Caller) -> Response:
    form = await read_form(request, service)
    raw = str(form.get("at") or "")
    at = cursor_number(raw)
    if at is None:
        raise BadRequest(f"at must be a checkpoint number, got {raw!r}")
    # Answered once the fork started: its page follows it live, as any run's does; waiting
    # for its end left the button dead for as long as the run took.
    started = await service.fork(caller, request.path_params["run_id"], at, None, wait=False)
    to = f"/ui/runs/{quote(started['run_id'], safe='')}"
    return Response(status_code=200, headers={"HX-Redirect": to})


# ---------------------------------------------------------------------- sign-in


# Why the sign-in page was shown instead of the page asked for (`?why=`): fixed texts, so the
# address can make the page say nothing else.
_SIGNED_OUT = {
    "refused": "Your sign-in is no longer accepted: its API key was revoked, or this server "
    "does not know it (any more). Sign in again.",
}


async def login_page(request: Request, service: Service) -> Response:
    why = _SIGNED_OUT.get(request.query_params.get("why", ""), "")
    return render(request, "login.html", dev=service.dev, error="", why=why)


async def login(request: Request, service: Service) -> Response:
    if _cross_site(request):
        # Login CSRF: another site's form would sign this browser in with its own key.
        return render(
            request, "login.html", 403, dev=service.dev, error="Sign-in from another site refused."
        )
    try:
        if service.dev:
            refuse_foreign_host(request)  # a DNS-rebinding page's sign-in as any user
        form = await read_form(request, service)
    except ServeError as err:
        return render(request, "login.html", err.status, dev=service.dev, error=str(err))
    key, user = str(form.get("key") or "").strip(), str(form.get("user") or "").strip()
    response = RedirectResponse("/ui", status_code=303)
    options: dict[str, Any] = {"httponly": True, "samesite": "strict", "path": "/"}
    if key:
        if await service.store.key(key) is None:
            return render(request, "login.html", 401, dev=service.dev, error="Unknown key.")
        response.set_cookie(KEY_COOKIE, key, **options)
    elif user and service.dev:
        response.set_cookie(DEV_COOKIE, user, **options)
    else:
        return render(request, "login.html", 400, dev=service.dev, error="Enter an API key.")
    return response


def _cross_site(request: Request) -> bool:
    """True when the browser says the request comes from another site (`Sec-Fetch-Site`, or
    an `Origin` naming another host); a client that sends neither is not a browser's form."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return True
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host", "")


async def logout(request: Request, service: Service) -> Response:
    if _cross_site(request):  # another site may not sign this browser out either
        return render(
            request, "login.html", 403, dev=service.dev, error="Sign-out from another site refused."
        )
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/")
    response.delete_cookie(DEV_COOKIE, path="/")
    return response


# A notice of its own (`notice-3`: an approval card's, `notice-fork`: a checkpoint's), which
# the buttons there target: their error is shown by them, not at the page's top, thousands
# of pixels above on a long page. (Letters and digits only: a CSS selector as it is.)
_OWN_NOTICE = re.compile(r"notice-[a-z0-9]{1,16}")


def notice_of(request: Request) -> str:
    """Where the error of a viewer's (htmx) request is shown: the notice its element targets
    (a card's, a checkpoint's), the live part's own for its poll (the next poll that redraws
    the part clears a stale error), else the page's `#notice`."""
    target = request.headers.get("hx-target", "")
    if _OWN_NOTICE.fullmatch(target):
        return f"#{target}"
    if target == "live":
        return "#live-notice"
    return "#notice"


def _page(service: Service, page: Page, *, write: bool = False) -> Any:
    async def endpoint(request: Request) -> Response:
        caller: Caller | None = None
        try:
            if write and request.headers.get("hx-request") != "true":
                raise BadRequest("changes are made from the viewer's pages (HX-Request)")
            # (a write reaches here from the viewer's own pages only: the cookie may sign it)
            caller = await authenticate(service.auth, request, cookie_writes=write)
            return await page(request, service, caller)
        except Unauthorized:
            return _signed_out(request)
        except Exception as err:
            if caller is None and write:  # refused before it was asked who sends it
                caller = await _signed_in(service, request)
            status, kind = status_of(err)
            if status == 500:  # logged; the page names only an error id
                message = internal_message(err, f"{request.method} {request.url.path}")
            elif isinstance(err, ServeError | ValueError) or status < 500:
                message = message_of(err)
            else:  # a typed 503: what cannot be reached now
                message = f"{type(err).__name__}: {err}"
            if request.headers.get("hx-request") == "true":
                html = text_of(f'<p class="error" role="alert">{escape(shown(message))}</p>')
                # Into the notice, never in its place: an outerHTML swap (the live poll's)
                # kept would replace the notice, and every later error had nowhere to go.
                headers = {"HX-Retarget": notice_of(request), "HX-Reswap": "innerHTML"}
                return HTMLResponse(html, status_code=200, headers=headers)
            return render(request, "error.html", status, kind=kind, message=message, caller=caller)

    return endpoint


async def _signed_in(service: Service, request: Request) -> Caller | None:
    """Who the browser's sign-in names, for the header of an error page only (nothing is
    written with it: the write was refused), or None."""
    try:
        return await authenticate(service.auth, request, cookie_writes=True)
    except Exception:  # signed out, or the key store out of reach: a page without a name
        return None


def _signed_out(request: Request) -> Response:
    """To the sign-in page: saying why when the browser's sign-in cookie was refused (its key
    revoked, or unknown here), whose cookies are then dropped."""
    cookie = any(request.cookies.get(name) for name in (KEY_COOKIE, DEV_COOKIE))
    to = "/ui/login?why=refused" if cookie else "/ui/login"
    response: Response
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=401, headers={"HX-Redirect": to})
    else:
        response = RedirectResponse(to, status_code=303)
    if cookie:
        response.delete_cookie(KEY_COOKIE, path="/")
        response.delete_cookie(DEV_COOKIE, path="/")
    return response


def ui_routes(service: Service) -> list[Route | Mount]:
    """The viewer's routes, bound to `service`."""

    def plain(fn: Callable[[Request, Service], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            return await fn(request, service)

        return endpoint

    return [
        Route("/ui", _page(service, runs_page)),
        Route("/ui/rows", _page(service, runs_rows)),
        Route("/ui/approvals", _page(service, approvals_page)),
        Route("/ui/login", plain(login_page), methods=["GET"]),
        Route("/ui/login", plain(login), methods=["POST"]),
        Route("/ui/logout", plain(logout), methods=["POST"]),
        Route("/ui/runs/{run_id}", _page(service, run_page)),
        Route("/ui/runs/{run_id}/live", _page(service, run_live)),
        Route("/ui/runs/{run_id}/checkpoint", _page(service, checkpoint)),
        Route("/ui/runs/{run_id}/approvals", _page(service, approve, write=True), methods=["POST"]),
        Route("/ui/runs/{run_id}/go-on", _page(service, go_on, write=True), methods=["POST"]),
        Route(
            "/ui/runs/{run_id}/approvals/{call_id:path}",
            _page(service, approve, write=True),
            methods=["POST"],
        ),
        Route("/ui/runs/{run_id}/fork", _page(service, fork, write=True), methods=["POST"]),
        Mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

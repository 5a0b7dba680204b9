"""The run viewer at `/ui`: server-rendered pages (Jinja2) kept live by the vendored htmx.

Pages poll small fragments while a run is live; a fragment that has nothing new answers 204
(htmx then leaves the page alone, so nothing jumps), and one whose run changed status asks
for a reload (`HX-Refresh`). Forms that change something are sent by htmx only: a POST
without the `HX-Request` header is refused, which a cross-site form cannot add.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import Undefined
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from loomgraph.agent.checkpoints import diff, pending_of
from loomgraph.agent.run_events import journal_events, run_is_live
from loomgraph.protocols import RunStatus, ToolCall
from loomgraph.protocols.shown_text import DISGUISING, shown_escape
from loomgraph.protocols.tool_identity import LOCAL, ToolIdentity
from loomgraph.serve.auth import (
    DEV_COOKIE,
    KEY_COOKIE,
    Caller,
    authenticate,
    refuse_foreign_host,
)
from loomgraph.serve.bodies import limited, parse_json
from loomgraph.serve.errors import (
    BadRequest,
    ServeError,
    Unauthorized,
    internal_message,
    message_of,
    status_of,
)
from loomgraph.serve.run_pages import cursor_number
from loomgraph.serve.service import Service
from loomgraph.serve.views import run_json

__all__ = ["ui_routes"]

HERE = Path(__file__).parent
# What disguises text, as the CLI escapes it (`protocols.shown_text`): a U+202E in a tool
# origin drew the approval card's digest right to left.
_DISGUISING = re.compile(f"[{DISGUISING}]")
# Shown as they are: tab and line ends are layout; NUL is `_UNSHOWN`'s.
_LAID_OUT = frozenset("\x00\t\n\r")


def shown(text: str) -> str:
    """`text` as a page shows it: each `_DISGUISING` character as its escape (`\\u202e`)."""
    return _DISGUISING.sub(lambda m: m[0] if m[0] in _LAID_OUT else shown_escape(m[0]), text)


def _finalize(value: Any) -> Any:
    # Every `{{ }}` of every page: its text `shown`, whoever chose it (the run, a model, a
    # tool, a server), a list's or a dict's too. Markup is the page's own (`exact`, `safe`)
    # and left as it is, and so are numbers and nothing.
    if hasattr(value, "__html__") or value is None or isinstance(value, int | float | Undefined):
        return value
    return shown(str(value))


def exact(value: Any) -> Markup:
    """`value` escaped as HTML only, not `shown`: for a form's field the page sends back as
    it is (a request's key, which holds the model's call id)."""
    return Markup.escape(value)


TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.finalize = _finalize
TEMPLATES.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
TEMPLATES.env.filters["compact"] = lambda v: json.dumps(v, default=str)[:160]
TEMPLATES.env.filters["exact"] = exact
# A URL path segment from text (a run id): every reserved character percent-encoded.
TEMPLATES.env.filters["segment"] = lambda v: quote(str(v), safe="")

Page = Callable[[Request, Service, Caller], Awaitable[Response]]
# Lone UTF-16 halves: a str may hold them (the Python API takes any str), UTF-8 cannot; and
# U+0000, which HTML does not show (the Python API takes it too).
_UNSHOWN = re.compile("[\x00\ud800-\udfff]")
# The runs page shows this many runs, and links to the next (older) page.
PAGE_ROWS = 100
# The viewer's forms are small (sign-in: key, user; an answer: allow, args, key; a fork: at):
# a form of more fields, or with a file, is not one of theirs.
FORM_FIELDS = 8


class PageFailed(ServeError):
    """A page could not be rendered: the server's fault, whatever the exception says."""

    status = 500
    kind = "internal"


def _text(html: str) -> str:
    """`html` as UTF-8 and a page can carry it: each lone surrogate and NUL shown as U+FFFD."""
    return _UNSHOWN.sub("\ufffd", html)


async def read_form(request: Request, service: Service) -> FormData:
    """The request's form, read within the server's body limit (`api.limited`: TooLarge while
    reading), of at most FORM_FIELDS fields and no file (BadRequest)."""
    try:
        return await limited(request, service.max_body).form(
            max_files=0, max_fields=FORM_FIELDS, max_part_size=service.max_body
        )
    except HTTPException as err:  # what Starlette makes of a form over its limits
        raise BadRequest(f"the form is refused: {err.detail}") from None
    except MultiPartException as err:
        raise BadRequest(f"the form is refused: {err.message}") from None


def _render(request: Request, name: str, http_status: int = 200, **context: Any) -> Response:
    # (not `status`: a page's context has a `status` of its own, the filter)
    try:
        html = TEMPLATES.get_template(name).render({"request": request, **context})
    except Exception as err:  # (its text is for the server's log: `internal_message`)
        raise PageFailed("the page could not be rendered") from err
    return HTMLResponse(_text(html), status_code=http_status)


# ---------------------------------------------------------------------- runs page


async def runs_page(request: Request, service: Service, caller: Caller) -> Response:
    return _render(request, "runs.html", **await _rows_context(request, service, caller))


async def runs_rows(request: Request, service: Service, caller: Caller) -> Response:
    return _render(request, "rows.html", **await _rows_context(request, service, caller))


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
    pending = None if live else pending_of(record)
    approval = pending if pending is not None and pending.call else None
    return {
        "caller": caller,
        "run": run_json(record, detail=True),
        "answer_url": None if approval is None else _answer_url(run_id, approval.call),
        "live": live,
        "events": events,
        "count": len(events),
        "last_seq": transitions[-1].seq if transitions else 0,
        "svg": await service.run_svg(caller, run_id),
        "pending": approval,
        "tool": None if approval is None else _tool_shown(approval.tool),
    }


def _answer_url(run_id: str, call: ToolCall | None) -> str | None:
    """Where the card's buttons post the answer to `call`: its id (the model's text, `call/1`
    or `..`) percent-encoded in the query, where no `/` or dot segment changes the route."""
    if call is None:
        return None
    return f"/ui/runs/{quote(run_id, safe='')}/approvals?{urlencode({'call_id': call['id']})}"


def _tool_shown(identity: ToolIdentity | None) -> dict[str, Any] | None:
    """What the approval card says of the tool a call is asked about: its origin, whether that
    is a function of the agent, its short digest; None for a request journaled before
    identities were recorded."""
    if identity is None:
        return None
    # The short form as `ToolIdentity.shown` makes it ("ORIGIN sha256:HEX"): its last word,
    # the digest, has no space in it whatever the origin's name has.
    short = identity.shown().rpartition(" ")[2]
    return {"origin": identity.origin, "local": identity.origin == LOCAL, "short": short}


async def run_page(request: Request, service: Service, caller: Caller) -> Response:
    context = await _run_context(service, caller, request.path_params["run_id"])
    return _render(request, "run.html", **context)


async def run_live(request: Request, service: Service, caller: Caller) -> Response:
    context = await _run_context(service, caller, request.path_params["run_id"])
    if context["run"]["status"] != request.query_params.get("status"):
        return Response(status_code=200, headers={"HX-Refresh": "true"})
    if str(context["count"]) == request.query_params.get("n"):
        return Response(status_code=204)  # nothing new: the page stays as it is
    return _render(request, "live.html", **context)


async def checkpoint(request: Request, service: Service, caller: Caller) -> Response:
    run_id = request.path_params["run_id"]
    raw = request.query_params.get("seq", "0")
    seq = cursor_number(raw)  # ASCII digits within the journal's integers
    if seq is None:
        raise BadRequest(f"seq must be a number, got {raw!r}")
    state = await service.state(caller, run_id, seq)
    before = await service.state(caller, run_id, seq - 1) if seq > 0 else {}
    changes = diff(before, state) if seq > 0 else {}
    return _render(request, "checkpoint.html", run_id=run_id, seq=seq, state=state, changes=changes)


# ---------------------------------------------------------------------- actions


def _form_bool(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


async def approve(request: Request, service: Service, caller: Caller) -> Response:
    form = await read_form(request, service)
    run_id = request.path_params["run_id"]
    # The page names the call in the query (`answer_url`); the path form is older pages'.
    call_id = request.path_params.get("call_id", request.query_params.get("call_id"))
    if call_id is None:
        raise BadRequest("the call answered is not named (`?call_id=`)")
    args: dict[str, Any] | None = None
    text = str(form.get("args") or "").strip()
    allow = _form_bool(form.get("allow"))
    if allow and text:
        args = parse_json(text, "the 'args' field")
        if not isinstance(args, dict):
            raise BadRequest("the arguments must be a JSON object")
    key = str(form.get("key") or "")  # the request the page showed
    record = await service.run(caller, run_id)
    pending = pending_of(record)
    # Unchanged (a plain approval) only as JSON: Python's == takes `true` for 1 and 1.0 for 1.
    shown = pending.call["args"] if pending is not None and pending.call else None
    if args is not None and json.dumps(args, sort_keys=True) == json.dumps(shown, sort_keys=True):
        args = None
    await service.approve(caller, run_id, call_id, allow, args, key=key)
    return Response(status_code=200, headers={"HX-Refresh": "true"})


async def fork(request: Request, service: Service, caller: Caller) -> Response:
    form = await read_form(request, service)
    raw = str(form.get("at") or "")
    at = cursor_number(raw)
    if at is None:
        raise BadRequest(f"at must be a checkpoint number, got {raw!r}")
    result = await service.fork(caller, request.path_params["run_id"], at, None)
    to = f"/ui/runs/{quote(result['run_id'], safe='')}"
    return Response(status_code=200, headers={"HX-Redirect": to})


# ---------------------------------------------------------------------- sign-in


async def login_page(request: Request, service: Service) -> Response:
    return _render(request, "login.html", dev=service.dev, error="")


async def login(request: Request, service: Service) -> Response:
    if _cross_site(request):
        # Login CSRF: another site's form would sign this browser in with its own key.
        return _render(
            request, "login.html", 403, dev=service.dev, error="Sign-in from another site refused."
        )
    try:
        if service.dev:
            refuse_foreign_host(request)  # a DNS-rebinding page's sign-in as any user
        form = await read_form(request, service)
    except ServeError as err:
        return _render(request, "login.html", err.status, dev=service.dev, error=str(err))
    key, user = str(form.get("key") or "").strip(), str(form.get("user") or "").strip()
    response = RedirectResponse("/ui", status_code=303)
    options: dict[str, Any] = {"httponly": True, "samesite": "strict", "path": "/"}
    if key:
        if await service.store.key(key) is None:
            return _render(request, "login.html", 401, dev=service.dev, error="Unknown key.")
        response.set_cookie(KEY_COOKIE, key, **options)
    elif user and service.dev:
        response.set_cookie(DEV_COOKIE, user, **options)
    else:
        return _render(request, "login.html", 400, dev=service.dev, error="Enter an API key.")
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
        return _render(
            request, "login.html", 403, dev=service.dev, error="Sign-out from another site refused."
        )
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/")
    response.delete_cookie(DEV_COOKIE, path="/")
    return response


def _page(service: Service, page: Page, *, write: bool = False) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            if write and request.headers.get("hx-request") != "true":
                raise BadRequest("changes are made from the viewer's pages (HX-Request)")
            # (a write reaches here from the viewer's own pages only: the cookie may sign it)
            caller = await authenticate(service.auth, request, cookie_writes=write)
            return await page(request, service, caller)
        except Unauthorized:
            if request.headers.get("hx-request") == "true":
                return Response(status_code=401, headers={"HX-Redirect": "/ui/login"})
            return RedirectResponse("/ui/login", status_code=303)
        except Exception as err:
            status, kind = status_of(err)
            if status == 500:  # logged; the page names only an error id
                message = internal_message(err, f"{request.method} {request.url.path}")
            elif isinstance(err, ServeError | ValueError) or status < 500:
                message = message_of(err)
            else:  # a typed 503: what cannot be reached now
                message = f"{type(err).__name__}: {err}"
            if request.headers.get("hx-request") == "true":
                html = _text(f'<p class="error" role="alert">{_escape(shown(message))}</p>')
                return HTMLResponse(html, status_code=200, headers={"HX-Retarget": "#notice"})
            return _render(request, "error.html", status, kind=kind, message=message)

    return endpoint


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ui_routes(service: Service) -> list[Route | Mount]:
    """The viewer's routes, bound to `service`."""

    def plain(fn: Callable[[Request, Service], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            return await fn(request, service)

        return endpoint

    return [
        Route("/ui", _page(service, runs_page)),
        Route("/ui/rows", _page(service, runs_rows)),
        Route("/ui/login", plain(login_page), methods=["GET"]),
        Route("/ui/login", plain(login), methods=["POST"]),
        Route("/ui/logout", plain(logout), methods=["POST"]),
        Route("/ui/runs/{run_id}", _page(service, run_page)),
        Route("/ui/runs/{run_id}/live", _page(service, run_live)),
        Route("/ui/runs/{run_id}/checkpoint", _page(service, checkpoint)),
        Route("/ui/runs/{run_id}/approvals", _page(service, approve, write=True), methods=["POST"]),
        Route(
            "/ui/runs/{run_id}/approvals/{call_id:path}",
            _page(service, approve, write=True),
            methods=["POST"],
        ),
        Route("/ui/runs/{run_id}/fork", _page(service, fork, write=True), methods=["POST"]),
        Mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

"""The `/v1` HTTP API: runs, their events (SSE), checkpoints, approvals, resume, fork, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loomgraph.agent.event_ids import EventId
from loomgraph.protocols import RunStatus
from loomgraph.serve.auth import Caller, authenticate
from loomgraph.serve.bodies import check_json_body, field, read_json
from loomgraph.serve.errors import BadRequest, Invalid, internal_message, message_of, status_of
from loomgraph.serve.hub import Closing
from loomgraph.serve.run_pages import MAX_CURSOR, cursor_number
from loomgraph.serve.service import Service, StoppedWaiting
from loomgraph.serve.views import dumps, run_json, sse_frame

__all__ = ["QUERY", "api_routes", "error_response", "takes_query"]


class Json(JSONResponse):
    """A JSON response; values JSON does not know are given as their text."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


Handler = Callable[[Request, Service, Caller], Awaitable[Response]]


def error_response(err: BaseException, request: Request) -> JSONResponse:
    """An error as `{"error": {"type", "message"}}` with its status code; a 500 names only an
    error id, its exception is in the server's log (`internal_message`)."""
    status, kind = status_of(err)
    if status == 500:
        message = internal_message(err, f"{request.method} {request.url.path}")
    elif status < 500:
        message = message_of(err)
    else:  # a typed 503: what cannot be reached now, which a client may retry
        message = f"{type(err).__name__}: {err}"
    # A 503 invites a retry, but not a shutting-down server's: the run goes on, a retried
    # POST would start another.
    retry = status == 503 and not isinstance(err, StoppedWaiting)
    headers = {"Retry-After": "1"} if retry else None
    return Json({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


# The query parameters each handler reads (`takes_query`); `guarded` refuses any other, and
# a handler not named here takes none.
QUERY: dict[Handler, tuple[str, ...]] = {}


def takes_query(*names: str) -> Callable[[Handler], Handler]:
    """Declare the query parameters a handler reads: any other is refused (`check_query`)."""

    def register(handler: Handler) -> Handler:
        QUERY[handler] = names
        return handler

    return register


def check_query(request: Request, names: tuple[str, ...]) -> None:
    """Invalid naming the query parameters not in `names` (a misspelt `?stauts=` is not
    ignored, as a body's field is not), or BadRequest naming one given twice (which counts?)
    or given empty (`?cursor=`: a client's bug, not "no cursor")."""
    items = request.query_params.multi_items()
    given = [name for name, _ in items]
    unknown = list(dict.fromkeys(name for name in given if name not in names))
    if unknown:
        raise Invalid(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; this endpoint takes "
            f"{', '.join(map(repr, names)) or 'none'}"
        )
    twice = next((name for i, name in enumerate(given) if name in given[:i]), None)
    if twice is not None:
        raise BadRequest(f"query parameter {twice!r} twice: give it once")
    empty = next((name for name, value in items if not value), None)
    if empty is not None:
        raise BadRequest(f"query parameter {empty!r} is empty: give a value or leave it out")


def int_param(request: Request, name: str, default: int | None = None) -> int:
    """A whole-number query or path parameter in ASCII digits, or BadRequest (`int` also
    reads "1_0", " 5", "+5", "-1" and other scripts' digits)."""
    raw = request.path_params.get(name, request.query_params.get(name))
    if raw is None:
        if default is None:
            raise BadRequest(f"parameter {name!r} is required")
        return default
    number = cursor_number(raw)  # ASCII digits within the journal's 64-bit integers
    if number is None:
        raise BadRequest(f"parameter {name!r} must be a whole number in digits, got {raw!r}")
    return number


def sse(frames: AsyncIterator[str]) -> StreamingResponse:
    """A text/event-stream response."""
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield  # (an async generator that yields nothing)


async def headers_only(response: Response) -> None:
    """`response` made a HEAD's answer: a stream's headers, not its body (an event stream
    follows its run until it ends, holding the connection, which a HEAD never reads)."""
    if isinstance(response, StreamingResponse):
        close = getattr(response.body_iterator, "aclose", None)
        if close is not None:
            await close()
        response.body_iterator = _no_body()


async def _frames(service: Service, caller: Caller, run_id: str, after: EventId | None) -> Any:
    """The run's events as SSE frames, until it stops or the server shuts down (`Closing`:
    the stream ends, and the client reconnects with `Last-Event-ID`, to this server once it
    is back or to another sharing the journal)."""
    try:
        async for item in service.events(caller, run_id, after):
            yield sse_frame(item)
    except Closing:
        return


# ---------------------------------------------------------------------- handlers


async def create_run(request: Request, service: Service, caller: Caller) -> Response:
    data = await read_json(request, service, ("input", "session_id", "stream", "background"))
    prompt = field(data, "input", str, None)
    if prompt is None:
        raise Invalid("field 'input' is required")
    session_id = field(data, "session_id", str, None)
    stream = field(data, "stream", bool, False)
    background = field(data, "background", bool, False)
    run_id = await service.start(caller, prompt, session_id)
    if stream:
        return sse(_frames(service, caller, run_id, None))
    if background:
        status = "queued" if service.fleet else "running"
        return Json({"run_id": run_id, "status": status}, status_code=202)
    record = await service.finished(caller, run_id)
    body = record.result or run_json(record, detail=True)
    if record.status == RunStatus.BUDGET_EXHAUSTED:
        error = {"type": "budget_exhausted", "message": record.reason}
        return Json({"error": error, "result": body}, status_code=429)
    return Json(body, status_code=201)


@takes_query("status", "graph", "limit", "cursor")
async def list_runs(request: Request, service: Service, caller: Caller) -> Response:
    q = request.query_params
    page = await service.runs(
        caller,
        status=q.get("status"),
        graph=q.get("graph"),
        limit=int_param(request, "limit", 50),
        cursor=q.get("cursor"),
    )
    return Json({"runs": [run_json(r) for r in page.runs], "cursor": page.cursor})


@takes_query("limit", "cursor")
async def list_approvals(request: Request, service: Service, caller: Caller) -> Response:
    page = await service.approvals(
        caller, limit=int_param(request, "limit", 50), cursor=request.query_params.get("cursor")
    )
    return Json({"runs": [run_json(r, detail=True) for r in page.runs], "cursor": page.cursor})


async def get_run(request: Request, service: Service, caller: Caller) -> Response:
    record = await service.run(caller, request.path_params["run_id"])
    return Json(run_json(record, detail=True))


@takes_query("after")
async def run_events(request: Request, service: Service, caller: Caller) -> Response:
    run_id = request.path_params["run_id"]
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    after = EventId.parse(raw) if raw else None
    await service.run(caller, run_id)  # 404 before the stream starts
    return sse(_frames(service, caller, run_id, after))


async def list_checkpoints(request: Request, service: Service, caller: Caller) -> Response:
    points = await service.checkpoints(caller, request.path_params["run_id"])
    rows = [
        {"seq": c.seq, "node": c.node, "visit": c.visit, "next": c.next_node, "patch": c.patch}
        for c in points
    ]
    return Json({"checkpoints": rows})


async def get_checkpoint(request: Request, service: Service, caller: Caller) -> Response:
    seq = int_param(request, "seq")
    state = await service.state(caller, request.path_params["run_id"], seq)
    return Json({"seq": seq, "state": state})


@takes_query("a", "b")
async def get_diff(request: Request, service: Service, caller: Caller) -> Response:
    a, b = int_param(request, "a"), int_param(request, "b")
    changes = await service.diff(caller, request.path_params["run_id"], a, b)
    return Json({"a": a, "b": b, "changes": changes})


async def answer_approval(request: Request, service: Service, caller: Caller) -> Response:
    data = await read_json(request, service, ("allow", "args", "reason", "key"))
    return await _answer(request, service, caller, data, request.path_params["call_id"])


async def answer_named_approval(request: Request, service: Service, caller: Caller) -> Response:
    # The call id in the body: any id, also one no URL path carries (`.`, `..`).
    data = await read_json(request, service, ("call_id", "allow", "args", "reason", "key"))
    call_id = field(data, "call_id", str, None)
    if call_id is None:
        raise Invalid("field 'call_id' (the pending call's `pending[].call.id`) is required")
    return await _answer(request, service, caller, data, call_id)


async def _answer(
    request: Request, service: Service, caller: Caller, data: dict[str, Any], call_id: str
) -> Response:
    """Answer the pending call `call_id` of the path's run with the body's fields."""
    allow = field(data, "allow", bool, None)
    if allow is None:
        raise Invalid("field 'allow' (true or false) is required")
    args = field(data, "args", dict, None)
    if args is not None and not allow:  # never dropped: the caller meant an edit
        raise Invalid(
            "field 'args' (the edited arguments of a call you approve) goes only with "
            "'allow' true: a denied call does not run"
        )
    reason = field(data, "reason", str, "")
    key = field(data, "key", str, "")  # the request answered (`pending[].key`), if named
    run_id = request.path_params["run_id"]
    status = await service.approve(caller, run_id, call_id, allow, args, reason, key=key)
    return Json({"run_id": run_id, "status": str(status)}, status_code=202)


async def resume_run(request: Request, service: Service, caller: Caller) -> Response:
    data = await read_json(request, service, ("value", "key"))
    run_id = request.path_params["run_id"]
    if not data:  # no answer: on past an approval request whose deadline passed
        status = await service.go_on(caller, run_id)
        return Json({"run_id": run_id, "status": str(status)}, status_code=202)
    if "value" not in data:
        raise Invalid("field 'value' is required")
    key = field(data, "key", str, "")  # the question answered (`pending[].key`)
    status = await service.resume(caller, run_id, data["value"], key=key)
    return Json({"run_id": run_id, "status": str(status)}, status_code=202)


async def fork_run(request: Request, service: Service, caller: Caller) -> Response:
    data = await read_json(request, service, ("at", "patch"))
    at = field(data, "at", int, None)
    if at is None:
        raise Invalid("field 'at' (a checkpoint seq, 0 or more) is required")
    if not 0 <= at <= MAX_CURSOR:  # as the checkpoints' path parameter is held
        raise Invalid(f"field 'at' must be a checkpoint seq from 0 to {MAX_CURSOR}, got {at}")
    patch = field(data, "patch", dict, None)
    result = await service.fork(caller, request.path_params["run_id"], at, patch)
    return Json(result, status_code=201)


async def cancel_run(request: Request, service: Service, caller: Caller) -> Response:
    await read_json(request, service, ())  # none: a reason sent is refused, not dropped
    record = await service.cancel(caller, request.path_params["run_id"])
    return Json(run_json(record, detail=True))


async def graph_svg(request: Request, service: Service, caller: Caller) -> Response:
    return Response(await service.graph_svg(), media_type="image/svg+xml")


async def run_svg(request: Request, service: Service, caller: Caller) -> Response:
    svg = await service.run_svg(caller, request.path_params["run_id"])
    return Response(svg, media_type="image/svg+xml")


# ---------------------------------------------------------------------- routes

_APPROVALS = "/v1/runs/{run_id}/approvals"
# (method, path, handler, success status, summary): the routes and the OpenAPI document.
ENDPOINTS: tuple[tuple[str, str, Handler, int, str], ...] = (
    ("POST", "/v1/runs", create_run, 201, "Start a run (JSON result, 202 background, or SSE)"),
    ("GET", "/v1/runs", list_runs, 200, "The caller's runs, newest first"),
    ("GET", "/v1/runs/{run_id}", get_run, 200, "A run: record, status, result, pending"),
    ("GET", "/v1/approvals", list_approvals, 200, "Runs waiting for an approval (approver)"),
    ("GET", "/v1/runs/{run_id}/events", run_events, 200, "The run's events (SSE), live"),
    ("GET", "/v1/runs/{run_id}/checkpoints", list_checkpoints, 200, "Every checkpoint"),
    ("GET", "/v1/runs/{run_id}/checkpoints/{seq}", get_checkpoint, 200, "State at a seq"),
    ("GET", "/v1/runs/{run_id}/diff", get_diff, 200, "What changed between checkpoints a, b"),
    ("POST", _APPROVALS + "/{call_id}", answer_approval, 202, "Answer a pending call (approver)"),
    ("POST", _APPROVALS, answer_named_approval, 202, "Answer the call the body names (approver)"),
    (
        "POST",
        "/v1/runs/{run_id}/resume",
        resume_run,
        202,
        "Give an interrupted run its value; with no body, go on past an expired approval",
    ),
    ("POST", "/v1/runs/{run_id}/fork", fork_run, 201, "A new run from a checkpoint"),
    ("POST", "/v1/runs/{run_id}/cancel", cancel_run, 200, "Cancel a run"),
    ("GET", "/v1/graph.svg", graph_svg, 200, "The agent's graph as SVG"),
    ("GET", "/v1/runs/{run_id}/graph.svg", run_svg, 200, "The graph with the run's path"),
)


def guarded(service: Service, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler run for an authenticated caller, its errors answered as JSON."""

    query = QUERY.get(handler, ())

    async def endpoint(request: Request) -> Response:
        try:
            caller = await authenticate(service.auth, request)
            check_json_body(request)  # before the handler reads the body (`read_json`)
            check_query(request, query)
            response = await handler(request, service, caller)
        except Exception as err:
            return error_response(err, request)
        if request.method == "HEAD":  # every GET route answers HEAD too (Starlette)
            await headers_only(response)
        return response

    return endpoint


def api_routes(service: Service) -> list[Route]:
    """The API's routes, bound to `service`."""
    # A call id is the model's text and may hold `/` (`call/1`): sent percent-encoded
    # (`call%2F1`), it reaches the router decoded, so `{call_id}` takes the rest of the path.
    # (ENDPOINTS keeps the `{call_id}` of the OpenAPI document.)
    return [
        Route(path.replace("{call_id}", "{call_id:path}"), guarded(service, handler), methods=[m])
        for m, path, handler, _, _ in ENDPOINTS
    ]

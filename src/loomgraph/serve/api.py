"""The `/v1` HTTP API: runs, their events (SSE), checkpoints, approvals, resume, fork, cancel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from loomgraph.agent.run_events import EventId
from loomgraph.protocols import RunStatus
from loomgraph.serve.auth import SAFE_METHODS, Caller, authenticate
from loomgraph.serve.errors import (
    BadRequest,
    Invalid,
    ServeError,
    TooLarge,
    message_of,
    status_of,
)
from loomgraph.serve.hub import Closing
from loomgraph.serve.run_pages import cursor_number
from loomgraph.serve.service import Service, StoppedWaiting
from loomgraph.serve.views import dumps, run_json, sse_frame

__all__ = [
    "MAX_DEPTH",
    "NotText",
    "UnsupportedMediaType",
    "api_routes",
    "check_value",
    "error_response",
    "limited",
    "parse_json",
    "read_json",
]

# How deep arrays and objects may nest in a body (the body itself is level 1): no endpoint
# takes more, and deeper data would reach the journal's and the engine's recursive code.
MAX_DEPTH = 64
_TOO_DEEP = f"is nested too deeply: more than {MAX_DEPTH} levels of arrays and objects"


class UnsupportedMediaType(ServeError):
    """A write's body declared as something other than JSON (a form's, text/plain)."""

    status = 415
    kind = "unsupported_media_type"


class NotText(BadRequest):
    """A string of the body that is not valid Unicode text (a lone UTF-16 surrogate)."""


class Json(JSONResponse):
    """A JSON response; values JSON does not know are given as their text."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


Handler = Callable[[Request, Service, Caller], Awaitable[Response]]


def error_response(err: BaseException) -> JSONResponse:
    """An error as `{"error": {"type", "message"}}` with its status code."""
    status, kind = status_of(err)
    message = message_of(err) if status < 500 else f"{type(err).__name__}: {err}"
    # A 503 invites a retry, but not a shutting-down server's: the run goes on, a retried
    # POST would start another.
    retry = status == 503 and not isinstance(err, StoppedWaiting)
    headers = {"Retry-After": "1"} if retry else None
    return Json({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def is_json(content_type: str) -> bool:
    """True for `application/json` (any case, any parameters such as a charset)."""
    return content_type.partition(";")[0].strip().lower() == "application/json"


def check_json_body(request: Request, body: bytes | None = None) -> None:
    """UnsupportedMediaType unless a write's body, if it has one, is declared JSON; `body`:
    the body read (else its headers tell whether there is one).

    A body without a Content-Type is read as JSON: a browser's cross-site form always
    declares one (and cannot declare JSON), a script's client often declares none.
    """
    headers = request.headers
    if request.method in SAFE_METHODS:
        return
    if body is None:
        length = headers.get("content-length", "0").strip()
        if length == "0" and "transfer-encoding" not in headers:
            return
    elif not body:
        return
    content_type = headers.get("content-type")
    if content_type is not None and not is_json(content_type):
        raise UnsupportedMediaType(
            f"the body is {content_type.partition(';')[0].strip()!r}; "
            "send it as JSON with 'Content-Type: application/json'"
        )


def check_value(value: Any, where: str = "the body") -> None:
    """Refuse what no journal row or page can hold, found walking `value` (keys too, without
    recursion): a lone UTF-16 surrogate (NotText, 400), U+0000 (Invalid, 422: Postgres keeps
    no NUL in text, so it is refused on every journal alike), and arrays and objects nested
    more than MAX_DEPTH deep (BadRequest)."""
    todo: list[tuple[Any, str, int]] = [(value, where, 1)]
    while todo:
        item, at, depth = todo.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            raise BadRequest(f"{where} {_TOO_DEEP}")
        if isinstance(item, dict):
            todo.extend((v, f"{at}[{k!a}]", depth + 1) for k, v in reversed(item.items()))
            todo.extend((k, f"a key of {at}", depth) for k in reversed(item))
        elif isinstance(item, list):
            todo.extend((v, f"{at}[{i}]", depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                raise NotText(
                    f"{at} is not valid Unicode text: it holds a lone surrogate "
                    f"{item[err.start]!a} at position {err.start} (half of a UTF-16 pair)"
                ) from None
            nul = item.find("\x00")
            if nul >= 0:
                raise Invalid(f"{at} holds U+0000 (NUL) at position {nul}: no journal keeps it")


def _not_json(word: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have (nor the journal).
    raise ValueError(f"{word} is not a JSON value")


def parse_json(raw: str | bytes, what: str) -> Any:
    """`raw` read as JSON and checked by `check_value`: BadRequest naming `what` when it is not
    JSON or nests too deeply (the parser's recursion is caught here, never a 500)."""
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise BadRequest(f"{what} {_TOO_DEEP}") from None
    except ValueError as err:
        raise BadRequest(f"{what} is not JSON: {err}") from None
    check_value(data, what)
    return data


def limited(request: Request, limit: int) -> Request:
    """The request, its body readable only within `limit` bytes, whatever reads it (JSON, a
    form): TooLarge now when its Content-Length says more, and while reading as soon as more
    has come (a body sent in chunks declares no length), so no more than that is ever read."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLarge(f"the body is over the limit of {limit} bytes")
        return message

    return Request(request.scope, receive)


async def read_json(request: Request, service: Service, fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object body ({} when empty), within the size limit (`limited`),
    declared JSON (UnsupportedMediaType), its strings and nesting as `check_value` takes them,
    and holding no field but `fields` (Invalid naming the others: a misspelt field is not
    ignored)."""
    body = await limited(request, service.max_body).body()
    check_json_body(request, body)
    if not body.strip():
        return {}
    data = parse_json(body, "the body")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = [name for name in data if name not in fields]
    if unknown:
        raise Invalid(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"this endpoint takes {', '.join(map(repr, fields)) or 'no body'}"
        )
    return data


def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """A body field of the given type, or Invalid naming it."""
    value = data.get(name, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise Invalid(f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


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


async def list_runs(request: Request, service: Service, caller: Caller) -> Response:
    q = request.query_params
    page = await service.runs(
        caller,
        status=q.get("status"),
        graph=q.get("graph"),
        limit=int_param(request, "limit", 50),
        cursor=q.get("cursor") or None,
    )
    return Json({"runs": [run_json(r) for r in page.runs], "cursor": page.cursor})


async def get_run(request: Request, service: Service, caller: Caller) -> Response:
    record = await service.run(caller, request.path_params["run_id"])
    return Json(run_json(record, detail=True))


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
    reason = field(data, "reason", str, "")
    key = field(data, "key", str, "")  # the request answered (`pending[].key`), if named
    run_id = request.path_params["run_id"]
    await service.approve(caller, run_id, call_id, allow, args, reason, key=key)
    return Json({"run_id": run_id, "status": "running"}, status_code=202)


async def resume_run(request: Request, service: Service, caller: Caller) -> Response:
    data = await read_json(request, service, ("value", "key"))
    if "value" not in data:
        raise Invalid("field 'value' is required")
    key = field(data, "key", str, "")  # the question answered (`pending[].key`)
    run_id = request.path_params["run_id"]
    await service.resume(caller, run_id, data["value"], key=key)
    return Json({"run_id": run_id, "status": "running"}, status_code=202)


async def fork_run(request: Request, service: Service, caller: Caller) -> Response:
    data = await read_json(request, service, ("at", "patch"))
    at = field(data, "at", int, None)
    if at is None or at < 0:
        raise Invalid("field 'at' (a checkpoint seq, 0 or more) is required")
    patch = field(data, "patch", dict, None)
    result = await service.fork(caller, request.path_params["run_id"], at, patch)
    return Json(result, status_code=201)


async def cancel_run(request: Request, service: Service, caller: Caller) -> Response:
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
    ("GET", "/v1/runs/{run_id}/events", run_events, 200, "The run's events (SSE), live"),
    ("GET", "/v1/runs/{run_id}/checkpoints", list_checkpoints, 200, "Every checkpoint"),
    ("GET", "/v1/runs/{run_id}/checkpoints/{seq}", get_checkpoint, 200, "State at a seq"),
    ("GET", "/v1/runs/{run_id}/diff", get_diff, 200, "What changed between checkpoints a, b"),
    ("POST", _APPROVALS + "/{call_id}", answer_approval, 202, "Answer a pending call (approver)"),
    ("POST", _APPROVALS, answer_named_approval, 202, "Answer the call the body names (approver)"),
    ("POST", "/v1/runs/{run_id}/resume", resume_run, 202, "Give an interrupted run its value"),
    ("POST", "/v1/runs/{run_id}/fork", fork_run, 201, "A new run from a checkpoint"),
    ("POST", "/v1/runs/{run_id}/cancel", cancel_run, 200, "Cancel a run"),
    ("GET", "/v1/graph.svg", graph_svg, 200, "The agent's graph as SVG"),
    ("GET", "/v1/runs/{run_id}/graph.svg", run_svg, 200, "The graph with the run's path"),
)


def guarded(service: Service, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler run for an authenticated caller, its errors answered as JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            caller = await authenticate(service.auth, request)
            check_json_body(request)  # also for a write that reads no body (cancel)
            return await handler(request, service, caller)
        except Exception as err:
            return error_response(err)

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

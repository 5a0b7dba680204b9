"""The viewer's approvals: the card that answers a pending call (on its run's page, and for an
approver on `/ui/approvals`, every user's calls of the served agent) and the answer it posts;
for a request whose deadline passed, the card sends the run on instead (the call denied as
timed out)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from loomgraph.agent.answers import expired, pending_of
from loomgraph.protocols import RunRecord, ToolCall
from loomgraph.protocols.tool_identity import LOCAL, ToolIdentity
from loomgraph.serve.auth import Caller
from loomgraph.serve.bodies import parse_json
from loomgraph.serve.errors import BadRequest, Invalid
from loomgraph.serve.pages import read_form, render
from loomgraph.serve.service import Service
from loomgraph.serve.views import input_of

__all__ = ["APPROVALS_ROWS", "approvals_page", "approve", "card_of", "go_on"]

# The approvals page shows the calls of this many waiting runs, newest first.
APPROVALS_ROWS = 50


def card_of(record: RunRecord, number: int = 0) -> dict[str, Any] | None:
    """What an approval card shows of `record`'s pending call (None when it waits for none):
    the request, the tool it names, where the answer goes, whether its deadline passed (then
    the card only sends the run on); `number` tells the cards of one page apart (their
    fields' ids)."""
    pending = pending_of(record)
    if pending is None or not pending.call:
        return None
    return {
        "pending": pending,
        "tool": _tool_shown(pending.tool),
        "answer_url": _answer_url(record.run_id, pending.call),
        "expired": expired(pending),
        "go_on_url": f"/ui/runs/{quote(record.run_id, safe='')}/go-on",
        "number": number,
    }


def _answer_url(run_id: str, call: ToolCall) -> str:
    """Where the card's buttons post the answer to `call`: its id (the model's text, `call/1`
    or `..`) percent-encoded in the query, where no `/` or dot segment changes the route."""
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


async def approvals_page(request: Request, service: Service, caller: Caller) -> Response:
    """Every user's pending calls of this agent, one card each (Forbidden without the role)."""
    cursor = request.query_params.get("cursor") or None
    page = await service.approvals(caller, limit=APPROVALS_ROWS, cursor=cursor)
    waiting = [
        {"run": record, "input": input_of(record), "card": card}
        for number, record in enumerate(page.runs)
        if (card := card_of(record, number)) is not None
    ]
    older = f"/ui/approvals?{urlencode({'cursor': page.cursor})}" if page.cursor else ""
    return render(
        request, "approvals.html", caller=caller, waiting=waiting, older=older, first=cursor is None
    )


def _answer_of(form: FormData) -> bool:
    """The card's `allow`: `true` or `false`, as its buttons send it, given once. Anything
    else is refused (Invalid), never read as a denial that would use the request up."""
    given = form.getlist("allow")
    if len(given) != 1 or given[0] not in ("true", "false"):
        raise Invalid("field 'allow' must be given once, as true or false")
    return given[0] == "true"


async def approve(request: Request, service: Service, caller: Caller) -> Response:
    """Answer the pending call a card shows; the page that sent it reloads."""
    form = await read_form(request, service)
    run_id = request.path_params["run_id"]
    # The page names the call in the query (`answer_url`); the path form is older pages'.
    call_id = request.path_params.get("call_id", request.query_params.get("call_id"))
    if call_id is None:
        raise BadRequest("the call answered is not named (`?call_id=`)")
    args: dict[str, Any] | None = None
    text = str(form.get("args") or "").strip()
    allow = _answer_of(form)
    if allow and text:
        args = parse_json(text, "the 'args' field")
        if not isinstance(args, dict):
            raise BadRequest("the arguments must be a JSON object")
    key = str(form.get("key") or "")  # the request the page showed
    # The card's text box holds the call's arguments: sent back unchanged, a plain approval.
    await service.approve(caller, run_id, call_id, allow, args, key=key, edited_only=True)
    return Response(status_code=200, headers={"HX-Refresh": "true"})


async def go_on(request: Request, service: Service, caller: Caller) -> Response:
    """Send on a run whose approval request expired, the call denied as timed out (the
    card's one button then); the page that sent it reloads."""
    await service.go_on(caller, request.path_params["run_id"])
    return Response(status_code=200, headers={"HX-Refresh": "true"})

"""Who is calling: pluggable authentication, API keys, and the loopback-only development mode.

An `auth` is any callable from the request to a `Caller`, a user id (a caller without the
approver role) or None (not authenticated); it may be async. The user id it gives is the only
user id the request acts as.

The viewer's sign-in cookies are sent by the browser with every request to the server, a
cross-site form's too, so they authenticate only reads (GET, HEAD) and the writes of routes
that checked their sender themselves (the viewer's htmx-only forms:
`authenticate(..., cookie_writes=True)`). Any other write needs a key in a header.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from loomgraph.serve.errors import Forbidden, Unauthorized
from loomgraph.serve.store import ServeStore

__all__ = [
    "Auth",
    "Caller",
    "DevModeRefused",
    "LoopbackHostOnly",
    "api_key_auth",
    "authenticate",
    "dev_auth",
    "refuse_foreign_host",
    "viewer_cookie",
]

DEV_HEADER = "x-user-id"
# The viewer's cookies (set by its sign-in page; SameSite=Strict, HttpOnly).
KEY_COOKIE = "loomgraph_key"
DEV_COOKIE = "loomgraph_user"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Set in the request's scope by `authenticate`: whether the cookies may authorise a write.
_COOKIE_WRITES = "loomgraph.cookie_writes"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the user id runs are kept under, and the approver role."""

    user_id: str
    approver: bool = False


Auth = Callable[[Any], "Caller | str | Awaitable[Caller | str | None] | None"]


class DevModeRefused(Unauthorized, ValueError):
    """`--dev` on an address other than loopback: anyone could claim to be anyone."""


def viewer_cookie(request: Any, name: str) -> str:
    """The viewer's cookie `name` when it may authenticate this request, else "": on a read,
    or on a write whose route checked its sender (`authenticate(..., cookie_writes=True)`)."""
    if request.method not in SAFE_METHODS and not request.scope.get(_COOKIE_WRITES, False):
        return ""
    return str(request.cookies.get(name, "")).strip()


def sent_key(headers: Any) -> str:
    """The API key a request's headers carry: `Authorization: Bearer KEY`, else `X-API-Key:
    KEY` ("" for none); Unauthorized when both are sent and differ (which one would speak
    is no choice for the server to make: two callers claim the request)."""
    scheme, _, token = str(headers.get("authorization", "")).partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    other = str(headers.get("x-api-key", "")).strip()
    if bearer and other and bearer != other:
        raise Unauthorized("two different API keys were sent (Authorization and X-API-Key)")
    return bearer or other


def api_key_auth(store: ServeStore) -> Auth:
    """Authenticate `Authorization: Bearer KEY` (or `X-API-Key: KEY`, or on reads the viewer's
    cookie) against the stored hashes."""

    async def auth(request: Any) -> Caller | None:
        key = sent_key(request.headers) or viewer_cookie(request, KEY_COOKIE)
        if not key:
            return None
        found = await store.key(key)
        return None if found is None else Caller(found.user_id, found.approver)

    return auth


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# The Host names `--dev` answers (with the server's port), beside the address it is bound to.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _host_and_port(host: str) -> tuple[str, str]:
    """A Host header's name (lower case; an IPv6 address keeps its brackets) and port."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return (name + "]").lower(), rest[1:] if rest.startswith(":") else rest
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name.lower(), port


def _foreign_host(scope: Scope) -> Forbidden | None:
    """Forbidden when the request's Host does not name this server on loopback: localhost,
    127.0.0.1, [::1] or the address it is bound to, with its port; else None."""
    host = Headers(scope=scope).get("host", "")
    bound, port = (scope.get("server") or (None, None))[:2]
    name, given = _host_and_port(host)
    names = LOOPBACK_NAMES | ({str(bound).lower(), f"[{bound}]".lower()} if bound else set())
    ours = given == str(port) if given else port in (None, 80)
    if name in names and ours:
        return None
    return Forbidden(
        f"the Host {host!r} is not this server: in development mode (--dev) it answers "
        f"only localhost, 127.0.0.1 or [::1]{f' on port {port}' if port else ''}"
    )


def refuse_foreign_host(request: Any) -> None:
    """Forbidden unless the request's Host names this server on loopback: localhost,
    127.0.0.1, [::1] or the address it is bound to, with its port. A page of another site
    whose name resolves to 127.0.0.1 (DNS rebinding) reaches a loopback server with the
    browser, under its own name: `--dev`, which believes X-User-Id, must not answer it.
    `create_app(dev=True)` checks every request (`LoopbackHostOnly`); this is for a route
    or an `auth` used without it."""
    refusal = _foreign_host(request.scope)
    if refusal is not None:
        raise refusal


class LoopbackHostOnly:
    """ASGI middleware of `--dev`: a request whose Host is not this server on loopback
    (`refuse_foreign_host`) reaches no route, whichever: it is answered 403 `forbidden`
    naming the Host (a WebSocket is closed, 1008)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = _foreign_host(scope) if scope["type"] in ("http", "websocket") else None
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
        else:
            body = {"error": {"type": refusal.kind, "message": str(refusal)}}
            await JSONResponse(body, status_code=refusal.status)(scope, receive, send)


def dev_auth(host: str, fallback: Auth | None = None) -> Auth:
    """Development only: trust an `X-User-Id` header or (as `viewer_cookie` allows) the
    viewer's `loomgraph_user` cookie, with the approver role. Refused unless
    the server is bound to loopback, and then every request (any credentials) is Forbidden
    whose Host is not loopback (`refuse_foreign_host`; `create_app(dev=True)` also refuses
    such a request on every route, `LoopbackHostOnly`); requests without the header go to
    `fallback`."""
    if not is_loopback(host):
        raise DevModeRefused(
            f"--dev trusts an X-User-Id header and is only allowed on loopback; "
            f"the server is bound to {host!r}"
        )

    async def auth(request: Any) -> Caller | str | None:
        refuse_foreign_host(request)
        user = request.headers.get(DEV_HEADER, "").strip()
        user = user or viewer_cookie(request, DEV_COOKIE)
        if user:
            return Caller(user, approver=True)
        if fallback is None:
            return None
        return await _ask(fallback, request)

    return auth


async def _ask(auth: Auth, request: Any) -> Caller | str | None:
    answer: Any = auth(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer if isinstance(answer, Caller | str) else None


async def authenticate(auth: Auth, request: Any, *, cookie_writes: bool = False) -> Caller:
    """The caller of a request, or Unauthorized. `cookie_writes`: the route has made sure its
    writes come from the viewer's own pages, so the viewer's cookie may authorise them."""
    request.scope[_COOKIE_WRITES] = cookie_writes
    answer = await _ask(auth, request)
    if isinstance(answer, str) and answer:
        return Caller(answer)
    if isinstance(answer, Caller) and answer.user_id:
        return answer
    if request.headers.get("authorization") or request.headers.get("x-api-key"):
        # Sent and refused: saying so tells a caller nothing a key's owner does not know.
        raise Unauthorized(
            "the credentials sent were not accepted (an unknown or revoked API key?); send "
            "'Authorization: Bearer <API key>' with a key of this server's (`loomgraph keys list`)"
        )
    if request.method in SAFE_METHODS or cookie_writes:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <API key>'")
    cookie = any(request.cookies.get(name) for name in (KEY_COOKIE, DEV_COOKIE))
    note = "; the viewer's sign-in cookie authorises reads only" if cookie else ""
    raise Unauthorized(
        f"authentication required: writes need an API key; send 'Authorization: Bearer "
        f"<API key>'{note}"
    )

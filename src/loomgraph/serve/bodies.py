"""Reading a request's JSON body: its size limit, its media type, its text and nesting, and
its fields."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.types import Message

from loomgraph.serve.auth import SAFE_METHODS
from loomgraph.serve.errors import BadRequest, ClientGone, Invalid, ServeError, TooLarge
from loomgraph.serve.service import Service

__all__ = [
    "MAX_DEPTH",
    "NotText",
    "UnsupportedMediaType",
    "check_json_body",
    "check_value",
    "field",
    "is_json",
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
        media = content_type.partition(";")[0].strip()
        said = f"the body is {media!r}" if media else f"Content-Type {content_type!r} names no type"
        raise UnsupportedMediaType(f"{said}; send it as JSON with 'Content-Type: application/json'")


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


def _finite(text: str) -> float:
    # `1e400` reads as infinity: refused as `Infinity` is, never kept as null or a 500.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a JSON double")
    return value


class _Repeated(Exception):  # not a ValueError: `parse_json` tells it from bad JSON
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on a repeated name (the first counts, the last, or it is an error):
    # `{"allow": false, ..., "allow": true}` would be a denial to a proxy that reads the
    # first and an approval here. Refused, in every object at any depth.
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Repeated(name)
            seen.add(name)
    return data


def _utf8(raw: bytes, what: str) -> str:
    # `json.loads` would also read UTF-16 and UTF-32, which JSON on a network is not. Their
    # JSON starts with an ASCII character, so a NUL is among its first four bytes (RFC 4627's
    # test); a NUL later in UTF-8 is JSON's to refuse (a control character in a string).
    where = raw.find(b"\x00", 0, 4)
    try:
        if where < 0:
            return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        where = err.start
    raise BadRequest(
        f"{what} is not UTF-8 text (byte {where} is not; UTF-16 or UTF-32?): send JSON as UTF-8"
    )


def parse_json(raw: str | bytes, what: str) -> Any:
    """`raw` read as JSON and checked by `check_value`: BadRequest naming `what` when it is not
    JSON, an object in it names a field twice, or it nests too deeply (the parser's recursion
    is caught here, never a 500). Bytes are UTF-8 (RFC 8259), a byte order mark ignored."""
    if isinstance(raw, bytes):
        raw = _utf8(raw, what)
    try:
        data = json.loads(
            raw, parse_constant=_not_json, parse_float=_finite, object_pairs_hook=_unique
        )
    except RecursionError:
        raise BadRequest(f"{what} {_TOO_DEEP}") from None
    except _Repeated as err:
        raise BadRequest(
            f"{what} names {err.name!a} twice in one object: give each field once"
        ) from None
    except ValueError as err:
        raise BadRequest(f"{what} is not JSON: {err}") from None
    check_value(data, what)
    return data


def limited(request: Request, limit: int) -> Request:
    """The request, its body readable only within `limit` bytes, whatever reads it (JSON, a
    form): TooLarge now when its Content-Length says more, and while reading as soon as more
    has come (a body sent in chunks declares no length), so no more than that is ever read;
    ClientGone when the client hangs up before the body has come."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client closed the connection before the body had come")
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
    """A body field of the given type, or Invalid naming it; `default` when it is left out
    or `null` (one rule for every field: a client's "none" is often `null`)."""
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise Invalid(f"field {name!r} must be {names}, got {type(value).__name__}")
    return value

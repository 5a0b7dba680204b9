"""What the adapters check of an HTTP exchange beyond the SDK: the whole request's deadline, a
200 that is not an event stream, and a request the HTTP library would not send."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any, TypeVar

from loomgraph.models._settings import shown
from loomgraph.models.errors import AdapterError, ModelConfigError, ModelRequestError, ModelTimeout

__all__ = ["Deadline", "not_an_event_stream", "refused_locally", "unsendable"]

T = TypeVar("T")

EVENT_STREAM = "text/event-stream"
# How much of a body that is not an event stream its error quotes.
HEAD_BYTES = 160
# The HTTP library's errors (httpx's, httpcore's, h11's; named, as their classes differ between
# SDK versions) for a request it refuses to send: no retry can change that.
_REFUSED = frozenset({"LocalProtocolError", "InvalidURL", "UnsupportedProtocol"})


class Deadline:
    """The end of one attempt's `total_timeout` (none when that is None): every wait of the
    attempt (the request, each event) is bounded by it, so a server that trickles keep-alive
    pings forever cannot hold a call past it, as the SDK's timeout (per read) lets it."""

    __slots__ = ("at", "label", "seconds")

    def __init__(self, seconds: float | None, label: str) -> None:
        self.seconds = seconds
        self.label = label
        self.at = None if seconds is None else asyncio.get_running_loop().time() + seconds

    async def bound(self, step: Callable[[], Awaitable[T]], request_id: str | None = None) -> T:
        """`step()` awaited, or ModelTimeout once the deadline has passed."""
        if self.at is None:
            return await step()
        if asyncio.get_running_loop().time() >= self.at:  # (a step that never waits, too)
            raise self._passed(request_id)
        scope = asyncio.timeout_at(self.at)
        try:
            # Around one await only, never a `yield`: the consumer's code is not cancelled.
            async with scope:
                return await step()
        except TimeoutError:
            if not scope.expired():
                raise
            raise self._passed(request_id) from None

    def _passed(self, request_id: str | None) -> ModelTimeout:
        return ModelTimeout(
            f"{self.label}: timed out: no complete answer within total_timeout="
            f"{self.seconds}s (request id {request_id})",
            request_id=request_id,
        )


async def not_an_event_stream(response: Any, deadline: Deadline) -> str:
    """What came back when a response is not an event stream (its status, content type and
    first bytes, quoted and bounded); "" when it is one, or names no type (it may still be)."""
    kind = response.headers.get("content-type")
    if kind is None or kind.split(";", 1)[0].strip().lower() == EVENT_STREAM:
        return ""
    try:
        head = await deadline.bound(partial(_head, response))
    except Exception:  # (a body that cannot be read is named by its type alone)
        head = b""
    body = f"beginning {shown(head.decode('utf-8', 'replace'))}" if head else "with no body"
    return (
        f"the server answered {response.status_code} {shown(kind)}, not an event stream "
        f"({EVENT_STREAM}), {body}; is base_url the API's address, and does the server "
        "stream (stream: true)?"
    )


async def _head(response: Any) -> bytes:
    head = b""
    async with aclosing(response.aiter_bytes()) as pieces:
        async for piece in pieces:
            head += piece
            if len(head) > HEAD_BYTES:
                break
    return head[: HEAD_BYTES + 1]  # (one more: `shown` marks the cut)


def refused_locally(exc: BaseException) -> bool:
    """Whether the HTTP library refused to send the request as it was configured."""
    if isinstance(exc, UnicodeEncodeError):  # a header (the key) that is not ASCII
        return not _in_body(exc)
    return any(cls.__name__ in _REFUSED for cls in type(exc).__mro__)


def _in_body(exc: UnicodeEncodeError) -> bool:
    # The JSON body is UTF-8: only a lone surrogate fails it (headers are ASCII or Latin-1).
    return exc.encoding.replace("-", "").lower() == "utf8"


def unsendable(label: str, exc: BaseException) -> AdapterError:
    """The error for a request that could not be made or sent as configured (not retried);
    a `ModelRequestError` for a body that holds text UTF-8 cannot carry (not the settings').

    An exception group (a connect that failed in a task group) is named by its first error.
    A refused header's message quotes its value, which may be the key: it is named, not shown.
    """
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    if isinstance(leaf, UnicodeEncodeError) and _in_body(leaf):
        # The conversation, not the settings: text the Python API took (a prompt, a tool's
        # result) that no request can carry. The same request fails again: not retried.
        bad = leaf.object[leaf.start : leaf.end]
        return ModelRequestError(
            f"{label}: the request holds text UTF-8 cannot carry ({bad!a}: half of a "
            f"UTF-16 surrogate pair, at character {leaf.start} of the JSON body); it was not sent"
        )
    name = type(leaf).__name__
    detail = name if refused_locally(leaf) else f"{name}: {shown(str(leaf))}"
    return ModelConfigError(
        f"{label}: the request could not be sent as configured ({detail}); check the "
        "model's settings (api_key, base_url)"
    )

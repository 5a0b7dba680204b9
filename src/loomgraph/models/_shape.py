"""Reading the chunks an SDK hands over, which it builds without validating them.

The SDKs construct stream events from the server's JSON as they come, so a number may sit
where text belongs and a string where a list does. The adapters read every field they use
through these helpers, which raise `MalformedChunk` naming what was wrong; the adapter turns
that into `ModelBadResponse` in the one place it reads a chunk (`HTTPModel._read`).
"""

from __future__ import annotations

import math
from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.protocols.usage import MAX_REPORTED_TOKENS

__all__ = [
    "SHAPE_ERRORS",
    "CallCutOff",
    "MalformedChunk",
    "count",
    "get",
    "index",
    "label",
    "obj",
    "text",
]


class MalformedChunk(LoomgraphError):
    """A streamed chunk (an SSE event) not shaped as the API documents it, or out of place
    (read as a `ModelBadResponse` by the adapter; it never reaches the caller)."""


class CallCutOff(LoomgraphError):
    """A tool call whose arguments do not parse, in an answer the provider stopped at its
    max_tokens: cut off, not malformed (read as a `ModelToolCallTruncated`, never retried)."""

    def __init__(self, tool: str, call_id: str) -> None:
        super().__init__(f"tool call {tool!r} ({call_id or 'no id'}) was cut off by max_tokens")
        self.tool = tool
        self.call_id = call_id


# The longest response id or model name kept: a label for telemetry, not a payload.
MAX_LABEL = 256

# What reading a chunk of the wrong shape raises: our own MalformedChunk, and what Python
# raises when a value is not the type the reader expected (the SDKs build chunks without
# validating them, so a number may sit where text belongs, a string where a list does).
SHAPE_ERRORS = (MalformedChunk, TypeError, AttributeError, KeyError)
_PRIMITIVES = (str, bytes, int, float, bool, list, tuple)


def get(item: Any, name: str) -> Any:
    """`item`'s field `name` (None when absent): an SDK model's attribute, or a dict's key."""
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


def obj(value: Any, what: str) -> Any:
    """`value` when it is an object (an SDK model or a dict); else MalformedChunk."""
    if value is None or isinstance(value, _PRIMITIVES):
        raise MalformedChunk(f"{what} is {_shown(value)}, not an object")
    return value


def text(value: Any, what: str) -> str:
    """`value` when it is text, "" for None (absent); else MalformedChunk."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedChunk(f"{what} is {_shown(value)}, not text")
    return value


def label(value: Any) -> str | None:
    """A name the provider gave its answer (its id, the model that wrote it): non-empty text
    of at most `MAX_LABEL` characters, else None. Never MalformedChunk: it only labels the
    call's telemetry, so a server that sends something else loses the label, not the call."""
    if isinstance(value, str) and 0 < len(value) <= MAX_LABEL:
        return value
    return None


def count(value: Any, what: str) -> int | None:
    """A token count a provider reported: a whole number from 0 to `MAX_REPORTED_TOKENS`, None
    when absent.

    Anything else (text, a boolean, a fraction, a negative number, more tokens than any call
    could have) is MalformedChunk: an impossible count would lower what the call is charged,
    charge it an absurd amount, or crash the accounting later.
    """
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedChunk(f"impossible usage: {what} is {_shown(value)}")
    if value > MAX_REPORTED_TOKENS:
        raise MalformedChunk(
            f"impossible usage: {what} is {_shown(value)}, over the {MAX_REPORTED_TOKENS:,} "
            "tokens no call can reach"
        )
    return value


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else f"a {type(value).__name__}"


def index(value: Any, what: str) -> int:
    """`value` when it is a whole number (a block's or a tool call's index); else
    MalformedChunk."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedChunk(f"{what} is {_shown(value)}, not a whole number")
    return value

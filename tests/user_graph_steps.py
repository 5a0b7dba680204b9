"""Steps and types the graphs of tests/test_probe_graphs.py name by import path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

# The file `send` appends a line to for every e-mail it sends (set by the test).
LEDGER = "PROBE_GRAPHS_LEDGER"


class Cart(BaseModel):
    """A shopping cart: a model whose field names are also names of dict methods."""

    items: list[str] = []
    count: int = 0


def send(state: Mapping[str, Any]) -> dict[str, Any]:
    """Send an e-mail (a side effect a run must do once): one line in the ledger."""
    with open(os.environ[LEDGER], "a", encoding="utf-8") as ledger:
        ledger.write("sent\n")
    return {"output": "sent"}


def empty_cart(state: Mapping[str, Any]) -> dict[str, Any]:
    """A cart with nothing in it."""
    return {"cart": {"items": [], "count": 0}}


def checkout(state: Mapping[str, Any]) -> dict[str, Any]:
    """The answer of the checkout branch."""
    return {"output": "checkout"}


def nothing_to_buy(state: Mapping[str, Any]) -> dict[str, Any]:
    """The answer of the empty-cart branch."""
    return {"output": "empty"}


def note(state: Mapping[str, Any]) -> dict[str, Any]:
    """Add a note to the conversation, as one item of the `append` field `messages`."""
    return {"messages": "note: the user is in a hurry"}


def boom(state: Mapping[str, Any]) -> dict[str, Any]:
    """A step that fails."""
    raise ValueError("the service said no")


def apologise(state: Mapping[str, Any]) -> dict[str, Any]:
    """The on_error handler: an answer naming what failed."""
    return {"output": f"sorry: {state['error']['message']}"}


def no_score(state: Mapping[str, Any]) -> dict[str, Any]:
    """Nothing to add to the score this time: None, which the field's type allows."""
    return {"score": None}


def grow_total(state: Mapping[str, Any]) -> dict[str, Any]:
    """Add a number so large that the sum overflows a float."""
    return {"total": 1.0e308}


def exits(state: Mapping[str, Any]) -> dict[str, Any]:
    """A step that calls sys.exit (a library the step uses may)."""
    raise SystemExit(3)

"""The function of `structured.yaml`: a graph of the user's own whose answer is structured."""

from __future__ import annotations

from typing import Any


def forecast(state: Any) -> dict[str, Any]:
    """A structured answer with text outside ASCII."""
    return {"output": {"city": "Zürich", "sky": "sonnig ☀", "celsius": 5}}

"""The data a permissions object is pinned by: its fingerprint, and the code it names."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from loomgraph.governance.rules import SetSource

__all__ = ["FORMAT", "described", "pinnable", "qualname", "set_data"]

FORMAT = "loomgraph.permissions/1"


def described(data: dict[str, Any]) -> tuple[str, str]:
    """`data` as JSON text (its key order kept) and its fingerprint: `sha256:<hex>` of its
    compact, sorted JSON."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    digest = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    return json.dumps(data), digest


def qualname(fn: Any) -> str:
    """`module.qualname` of a callable: how code that decides is named in the data."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or '?'}.{name}"


def set_data(source: SetSource) -> Any:
    """A named set as data: its strings sorted, or the callable that returns them."""
    if callable(source):
        return {"callable": qualname(source)}
    return sorted(source)


def pinnable(data: Any) -> bool:
    """False when something that decides is code (a policy or a callable set)."""
    if isinstance(data, dict):
        return "callable" not in data and all(pinnable(v) for v in data.values())
    if isinstance(data, list):
        return all(pinnable(v) for v in data)
    return True

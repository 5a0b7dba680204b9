"""`shape`: a value named by its type and size, never its contents — for the reason of a
refusal or a denial, which goes into events and the audit log, where a value a callback
returned (the call it was given, its arguments) must not."""

from __future__ import annotations

from typing import Any

__all__ = ["shape"]


def shape(value: Any) -> str:
    """What a value is by its type and size (`a value of 2 key(s) (dict)`, `a value (str)`)."""
    kind = type(value).__name__
    if isinstance(value, dict):
        return f"a value of {len(value)} key(s) ({kind})"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a value of {len(value)} item(s) ({kind})"
    return f"a value ({kind})"

"""What a caller passes an Agent, checked where it is passed: text where text is meant.

A wrong type found later fails deep inside (`object of type 'int' has no len()`), or after the
run is journaled, as a failed run nobody started on purpose; found here it is a TypeError
naming the argument, and nothing is journaled.
"""

from __future__ import annotations

__all__ = ["check_text"]


def check_text(argument: str, value: object, *, optional: bool = False) -> None:
    """Refuse a `value` that is not a str (or None, when `optional`): a TypeError naming
    `argument`, the type given and what to pass instead."""
    if isinstance(value, str) or (optional and value is None):
        return
    wanted = "a str or None" if optional else "a str"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
    hint = ""
    if argument == "prompt" and isinstance(value, list | tuple):
        hint = "; a run starts from one user message, its text (memory= keeps earlier turns)"
    raise TypeError(f"{argument} must be {wanted}, got {type(value).__name__} {shown}{hint}")

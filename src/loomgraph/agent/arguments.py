"""What a caller passes an Agent, checked where it is passed: text where text is meant.

A wrong type found later fails deep inside (`object of type 'int' has no len()`), or after the
run is journaled, as a failed run nobody started on purpose; found here it is a TypeError
naming the argument, and nothing is journaled.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["check_checkpoint", "check_mapping", "check_text"]


def check_text(argument: str, value: object, *, optional: bool = False) -> None:
    """Refuse a `value` that is not a str (or None, when `optional`): a TypeError naming
    `argument`, the type given and what to pass instead."""
    if isinstance(value, str) or (optional and value is None):
        return
    hint = ""
    if argument == "prompt" and isinstance(value, list | tuple):
        hint = "; a run starts from one user message, its text (memory= keeps earlier turns)"
    _refuse(argument, value, "a str or None" if optional else "a str", hint)


def check_checkpoint(argument: str, value: object) -> None:
    """Refuse a checkpoint's seq that is not an int (a bool is not one either)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return
    _refuse(argument, value, "an int (a checkpoint's seq: see `agent.history(run_id)`)")


def check_mapping(argument: str, value: object) -> None:
    """Refuse a `value` that is neither a mapping nor None."""
    if value is None or isinstance(value, Mapping):
        return
    _refuse(argument, value, "a dict of state fields or None")


def _refuse(argument: str, value: object, wanted: str, hint: str = "") -> None:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
    raise TypeError(f"{argument} must be {wanted}, got {type(value).__name__} {shown}{hint}")

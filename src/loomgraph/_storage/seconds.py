"""Time limits given to a backend, checked where they are given: `checked_seconds`."""

from __future__ import annotations

import math
from typing import Any


def checked_seconds(
    name: str,
    value: Any,
    *,
    error: type[ValueError] = ValueError,
    wrong_type: type[Exception] | None = None,
    least: float = 0.0,
    most: float = math.inf,
) -> float:
    """`value` as seconds, or `error` naming `name` when it is no finite number (a bool, a
    str, NaN, an infinity), is not > 0 or lies outside `least`..`most`: a time limit that
    fails only at first use, or silently means "never" or "at once", is refused where it is
    given. `wrong_type` (default `error`) is raised for a value that is no number at all.
    The one check of time limits given to backends, tools and permissions."""
    try:
        shown = repr(value)
    except ValueError:  # an int of more digits than Python prints
        shown = f"an int of {value.bit_length()} bits"
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise (wrong_type or error)(f"{name} must be a number of seconds, not {shown}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0 and least <= seconds <= most):
        bounds = f"of at least {least:g}" if least > 0 else "> 0"
        bounds += f" and at most {most:g}" if math.isfinite(most) else ""
        raise error(f"{name} must be a finite number of seconds {bounds}, not {shown}")
    return seconds

"""Equality of JSON values as JSON sees them: Python's `True == 1 == 1.0` is not."""

from __future__ import annotations

from typing import Any

__all__ = ["same_json"]

_NUMBERS = (int, float)  # exactly: a bool is no number to JSON


def same_json(a: Any, b: Any, *, numbers_by_value: bool = False) -> bool:
    """Whether two JSON-shaped values are equal, types included (`true` is not `1`, and `1`
    is not `1.0`: they are written differently, and a rule or pattern reading the text sees
    that, unless `numbers_by_value`); iterative, so a deeply nested value cannot exhaust the
    stack."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if numbers_by_value and type(x) in _NUMBERS and type(y) in _NUMBERS:
            if x != y:
                return False
            continue
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[key], y[key]) for key in x)
        elif isinstance(x, list | tuple):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True

"""Whether a value of one declared type can ever be stored in a typed state field.

Used by the checks of node kinds that write a value of a declared type (an `interrupt`'s
`request`, an `llm` node's `schema`) into a field: a pair that can never fit would fail every
run at that node. Only a sure mismatch counts: the state converts as pydantic does (`"5"` fits
an `int`, `2.0` an `int`, `0` a `bool`), and the contents of lists and dicts are not compared
(an empty list fits any list).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from loomgraph.graph.field_types import parse_type
from loomgraph.graph.spec import StateField

_BASES: dict[Any, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "dict",
}
_NUMBERS = frozenset({"int", "float", "bool"})
# The kinds of field a value of each kind may be converted into.
_MAY_FIT: dict[str, frozenset[str]] = {
    "str": frozenset({"str"}) | _NUMBERS,
    "int": _NUMBERS,
    "float": _NUMBERS,
    "bool": _NUMBERS,
    "list": frozenset({"list"}),
    "dict": frozenset({"dict", "model"}),
    "model": frozenset({"dict", "model"}),
    "none": frozenset({"none"}),
}


def _options(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [o for arg in get_args(tp) for o in _options(arg)]
    return [tp]


def _kind(tp: Any) -> str | None:
    """The kind of a (non-union) type, or None when it is any or unknown."""
    base = get_origin(tp) or tp
    if base is type(None):
        return "none"
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "model"
    return _BASES.get(base)


def _fits(value: Any, target: Any, *, appended: bool) -> bool:
    """Whether some value of type `value` may be stored in a field of type `target`; a
    non-list value appended to a list field is wrapped in a list first."""
    into, kind = _kind(target), _kind(value)
    if into is None or kind is None:
        return True
    if appended and into == "list" and kind != "list":
        element = get_args(target)
        return not element or any(_fits(value, e, appended=False) for e in _options(element[0]))
    return into in _MAY_FIT[kind]


def never_fits(written: str, field: StateField, near: str | Path | None = None) -> bool:
    """Whether no value of the type string `written` can ever be stored in `field`; False when
    either type does not parse (reported on its own) or is `any`. `near`: the graph file (its
    types by import path are looked for next to it)."""
    try:
        value, target = parse_type(written, near=near), parse_type(field.type, near=near)
    except Exception:
        return False
    appended = field.reducer == "append"
    return not any(
        _fits(v, t, appended=appended) for v in _options(value) for t in _options(target)
    )

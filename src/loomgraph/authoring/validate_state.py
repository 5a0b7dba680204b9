"""The state rules of graph validation: `bad-type`, `bad-default` and `bad-reducer-type`.

A state field's type string must parse, its default be a value of the type, and its reducer
able to combine values of the type (docs/validation.md).
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, ValidationError

from loomgraph.authoring.validate_flow import problem_at
from loomgraph.errors import Problem
from loomgraph.graph.field_types import parse_type
from loomgraph.graph.spec import Graph

__all__ = ["check_state_types"]

# As the state checks a field: finite floats (the state is journaled as JSON).
_FINITE = ConfigDict(allow_inf_nan=False)


def check_state_types(graph: Graph) -> list[Problem]:
    """`bad-type` (a type string that does not parse), `bad-default` and `bad-reducer-type`."""
    problems = []
    for name, field in graph.state.items():
        try:
            parsed = parse_type(field.type, near=graph.source)
        except Exception as err:  # an imported module may raise anything
            problems.append(
                problem_at(graph, "bad-type", f"state field {name!r}: {err}", "state", name, "type")
            )
            continue
        if (why := _default_mismatch(field.default, parsed)) is not None:
            problems.append(
                problem_at(
                    graph,
                    "bad-default",
                    f"state field {name!r}: default {field.default!r} does not fit type "
                    f"{field.type!r}: {why}",
                    "state",
                    name,
                    "default",
                )
            )
        if (why := _reducer_mismatch(field.reducer, parsed)) is not None:
            problems.append(
                problem_at(
                    graph,
                    "bad-reducer-type",
                    f"state field {name!r}: reducer {field.reducer!r} {why}, not {field.type!r}",
                    "state",
                    name,
                    "reducer",
                )
            )
    return problems


def _reducer_mismatch(reducer: str, parsed: Any) -> str | None:
    """Why a reducer cannot combine values of a type, or None when it can."""
    options = [o for o in _union_options(parsed) if o is not type(None)]
    if any(o is Any for o in options):
        return None
    bases = [get_origin(o) or o for o in options]
    if reducer == "append" and list not in bases:
        return "needs a list type like list[str]"
    if reducer == "merge" and not any(b is dict or _is_model(b) for b in bases):
        return "needs a dict type like dict[str, int]"
    if reducer == "add" and any(b in (str, bool) for b in bases):
        return "needs a number, list or dict[str, int] type"
    if reducer == "add" and any(_adds_no_numbers(o) for o in options):
        return "adds a dict's values key by key, so needs number values like dict[str, int]"
    return None


def _adds_no_numbers(option: Any) -> bool:
    """Whether `option` is a dict type whose values `add` cannot sum (text, flags, lists…)."""
    args = get_args(option)
    if get_origin(option) is not dict or len(args) != 2:
        return False
    values = [get_origin(v) or v for v in _union_options(args[1]) if v is not type(None)]
    return any(v in (str, bool, list, dict) or _is_model(v) for v in values)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _holds_model(tp: Any) -> bool:
    """Whether a type is or contains a pydantic model (which fills in its own defaults)."""
    return _is_model(tp) or any(_holds_model(arg) for arg in get_args(tp))


def _default_mismatch(default: Any, parsed: Any) -> str | None:
    """Why a field's default is not a value of its type, or None when it is (or is unset).
    It must be written as a value of the type: `"5"` for an `int` is refused, though a patch
    `"5"` would be converted. (The state holds it as the field's adapter makes it, like a
    patch: `StateSchema`; a model's defaults are filled in there.)"""
    if default is None or parsed is Any:
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(parsed, config=_FINITE)
    except PydanticUserError:  # a model keeps its own config
        adapter = TypeAdapter(parsed)
    try:
        value = adapter.validate_python(default)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        at = ".".join(str(part) for part in first["loc"])
        return f"{at + ': ' if at else ''}{first['msg']}"
    except Exception as err:  # a model's own validator may raise anything
        return f"{type(err).__name__}: {err}"
    if _holds_model(parsed):
        return None
    written = adapter.dump_python(value, mode="json")
    same_type = type(written) is type(default) or _numbers(written, default)
    return None if written == default and same_type else f"write it as {_as_written(written)}"


def _as_written(value: Any) -> str:
    """A value as a graph file writes it. A float in exponent form gets its `.0`: YAML
    reads `1e+308` as text, `1.0e+308` as a number."""
    text = repr(value)
    if isinstance(value, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e", 1)
    return text


def _numbers(a: Any, b: Any) -> bool:
    """Whether both are numbers (an int default for a float field is fine), not flags."""
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def _union_options(parsed: Any) -> list[Any]:
    if get_origin(parsed) in (Union, types.UnionType):
        return [o for arg in get_args(parsed) for o in _union_options(arg)]
    return [parsed]

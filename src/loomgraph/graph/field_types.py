"""The types a graph declares for its state fields, read from their strings
(`list[dict[str, int]] | None`, `steps:Report`) without eval."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel

from loomgraph.errors import LoomgraphError
from loomgraph.graph.imports import import_object

__all__ = ["TypeSyntaxError", "parse_type"]


class TypeSyntaxError(LoomgraphError, ValueError):
    """A state field type string that does not parse or names nothing importable."""


_SIMPLE: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "any": Any,
    "Any": Any,
    "None": type(None),
    "none": type(None),
    "list": list,
    "dict": dict,
}
_TOKEN = re.compile(r"\s*([A-Za-z_][\w.:]*|\[|\]|,|\|)")


def parse_type(text: str, *, near: str | Path | None = None) -> Any:
    """Turn a type string like `list[dict[str, int]] | None` into a Python type, without eval.

    A model named by import path (`steps:Report`) is looked for as a `function` node's `call`
    is (`graph.imports.import_object`): next to `near` (the graph file naming it; pass
    `graph.source`), then in the current directory, then in the installed packages."""
    tokens = _tokens(text)
    result, rest = _parse_union(tokens, near)
    if rest:
        raise TypeSyntaxError(f"unexpected {rest[0]!r} in type {text!r}")
    return result


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            raise TypeSyntaxError(f"cannot read type {text!r} at {text[pos:]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def _parse_union(tokens: list[str], near: str | Path | None) -> tuple[Any, list[str]]:
    first, tokens = _parse_atom(tokens, near)
    options = [first]
    while tokens and tokens[0] == "|":
        option, tokens = _parse_atom(tokens[1:], near)
        options.append(option)
    return (options[0] if len(options) == 1 else Union[tuple(options)]), tokens  # noqa: UP007


def _parse_atom(tokens: list[str], near: str | Path | None) -> tuple[Any, list[str]]:
    if not tokens or tokens[0] in "[],|":
        raise TypeSyntaxError(f"expected a type name, got {tokens[:1] or 'the end'}")
    name, tokens = tokens[0], tokens[1:]
    base = _SIMPLE.get(name)
    if base is None:
        base = _import_model(name, near)
    if not tokens or tokens[0] != "[":
        return base, tokens
    args = []
    tokens = tokens[1:]
    while True:
        arg, tokens = _parse_union(tokens, near)
        args.append(arg)
        if not tokens:
            raise TypeSyntaxError("unclosed '['")
        sep, tokens = tokens[0], tokens[1:]
        if sep == "]":
            break
        if sep != ",":
            raise TypeSyntaxError(f"expected ',' or ']', got {sep!r}")
    if base is list and len(args) == 1:
        return list[args[0]], tokens  # type: ignore[valid-type]
    if base is dict and len(args) == 2:
        return dict[args[0], args[1]], tokens  # type: ignore[valid-type]
    if name in ("Optional",) and len(args) == 1:
        return Optional[args[0]], tokens  # noqa: UP045
    raise TypeSyntaxError(f"{name}[...] takes {'one' if base is list else 'two'} argument(s)")


def _import_model(path: str, near: str | Path | None) -> Any:
    """The pydantic model at `module:Model`, found as a `function` node's `call` is: next to
    the graph file `near`, then in the current directory, then in the installed packages."""
    if not (":" in path or "." in path):
        raise TypeSyntaxError(
            f"unknown type {path!r}: use str, int, float, bool, any, list[T], dict[K, V], "
            "T | None or a pydantic model by import path (module:Model)"
        )
    try:
        found = import_object(path, near=near, what="type")
    except ImportError as err:
        raise TypeSyntaxError(str(err)) from None
    if isinstance(found, type) and issubclass(found, BaseModel):
        return found
    raise TypeSyntaxError(
        f"type {path!r} is {_described(found)}, not a pydantic model; name a BaseModel "
        "subclass, or use str, int, float, bool, any, list[T], dict[K, V], T | None"
    )


def _described(found: Any) -> str:
    if isinstance(found, type):
        return f"the class {found.__name__}"
    return f"a {type(found).__name__}"

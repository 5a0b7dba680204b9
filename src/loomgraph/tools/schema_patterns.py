"""A JSON Schema's regular expressions on RE2, not Python's `re`: jsonschema runs `pattern`,
`patternProperties` (and `additionalProperties` beside it) with `re`, a backtracking engine
that can hold the event loop for minutes on forty characters (`^(a+)+$`). `guarded` swaps
those keywords for ones that run on RE2 (`re2_patterns`), and `unusable` says why a schema
cannot be checked that way. Used for an MCP server's schemas and `Tool.from_schema`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from loomgraph.tools import re2_patterns as patterns

__all__ = ["SCHEMA_PROGRAM", "guarded", "short", "unusable"]

SCHEMA_PROGRAM = 500_000
"""The RE2 instructions one schema's distinct patterns may compile to in all (about a quarter
of a second of compiling when the listing is read; an ordinary pattern needs a few to a few
thousand)."""


# jsonschema runs `pattern`, `patternProperties` (and `additionalProperties` beside it) with
# Python's `re`; these are its keywords on RE2 (re2_patterns.py) instead.


def _search(pattern: str, text: str) -> bool:
    return patterns.compiled(pattern).search(text)


def _too_long(what: str, pattern: str, keyword: str) -> Any:
    from jsonschema import ValidationError

    return ValidationError(
        f"{what} too long to check against the {keyword} {short(pattern)} within "
        "loomgraph's limit on checking work; send shorter text"
    )


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "string"):
        return
    try:
        found = _search(pattern, instance)
    except patterns.PatternTooCostly:
        yield _too_long(f"{short(instance)} ({len(instance):,} characters) is", pattern, "pattern")
        return
    if not found:  # jsonschema's message, with a long text or pattern shortened
        yield ValidationError(f"{short(instance)} does not match {short(pattern)}")


def _pattern_properties(validator: Any, given: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in given.items():
        for key, value in instance.items():
            try:
                found = _search(pattern, key)
            except patterns.PatternTooCostly:
                yield _too_long("a property name is", pattern, "patternProperties key")
                return
            if found:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "object"):
        return
    named, regexes = schema.get("properties", {}), schema.get("patternProperties", {})
    try:
        extras = {
            key
            for key in instance
            if key not in named and not any(_search(r, key) for r in regexes)
        }
    except patterns.PatternTooCostly:
        yield _too_long("a property name is", "|".join(regexes), "patternProperties keys")
        return
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:  # jsonschema's own messages
        listed = ", ".join(repr(key) for key in sorted(extras, key=str))
        if regexes:
            verb = "does" if len(extras) == 1 else "do"
            shown = ", ".join(repr(r) for r in sorted(regexes))
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {shown}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)"
            )


_KEYWORDS = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@functools.cache
def guarded(cls: Any) -> Any:
    """`cls` (a jsonschema validator class) with its regex keywords on RE2 (re2_patterns.py)."""
    from jsonschema.validators import extend

    keywords = {k: f for k, f in _KEYWORDS.items() if k in cls.VALIDATORS}
    return extend(cls, keywords)  # type: ignore[no-untyped-call]


def unusable(source: Any, checked: Any) -> str | None:
    """Why the schema cannot be checked without Python's `re`, or None. Every object in it
    is read, data too: a `$ref` may point anywhere, and what it points at is a schema. Each
    pattern is compiled here, so its programs in all are bounded (SCHEMA_PROGRAM)."""
    from jsonschema.validators import validator_for

    keywords: set[str] = set()
    seen: set[str] = set()
    program = 0  # RE2 instructions of the patterns seen
    todo: list[tuple[Any, str]] = [(source, "")]
    while todo:
        node, where = todo.pop()
        if isinstance(node, list):
            todo.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            regexes = []
            if key == "pattern" and isinstance(value, str):
                regexes = [("`pattern`", value)]
            elif key == "patternProperties" and isinstance(value, dict):
                regexes = [("`patternProperties` key", r) for r in value]
            for keyword, regex in regexes:
                if regex in seen:
                    continue
                seen.add(regex)
                try:
                    program += patterns.check(regex)
                except patterns.PatternUnsupported as exc:
                    return f"{keyword} {short(regex)} at {here} cannot be checked safely: {exc}"
                if program > SCHEMA_PROGRAM:
                    return (
                        f"{keyword} {short(regex)} at {here} cannot be checked safely: the "
                        f"schema's patterns take more than {SCHEMA_PROGRAM:,} RE2 instructions"
                    )
            # jsonschema would check a part that names its dialect with its own validator,
            # and so with `re`.
            if (
                key == "$schema"
                and node is not source
                and isinstance(value, str)
                and validator_for({"$schema": value}, default=checked) is not checked
            ):
                return f"names a dialect ($schema) at {here}, below its root"
            keywords.add(key)
            todo.append((value, here))
    if {"unevaluatedProperties", "patternProperties"} <= keywords:
        # jsonschema finds the properties patternProperties evaluated with `re`.
        return "has both unevaluatedProperties and patternProperties"
    return None


def short(text: str) -> str:
    """`text` as its repr, cut after 60 characters."""
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}..."

"""What a server's listing and the model's arguments must meet before loomgraph uses them.

An MCP server is another program: its tool names and schemas are checked as a local tool's
are when it is built, and the model's arguments are checked against the schema before they
leave, so a bad call is the model's `invalid_arguments`, not the server's problem. A
result's structuredContent is checked here against the tool's outputSchema too, not by the
SDK (`check_output`). `jsonschema` is imported only when a server lists its tools. The
schemas' regular expressions run on RE2 (patterns.py), never on Python's `re`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

from loomgraph.protocols import (
    INVALID_ARGUMENTS,
    ToolArgLimits,
    ToolArgsRejected,
    ToolResult,
    check_tool_args,
)
from loomgraph.tools.json_schema import local_validator
from loomgraph.tools.mcp import patterns
from loomgraph.tools.mcp.schema_refs import ref_problem
from loomgraph.tools.results import error as error_result

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
"""What Anthropic and OpenAI accept as a tool name (the rule local tools meet, tools/tool.py).
Use it with `fullmatch`: `\\Z`, not `$`, which also matches before a final newline."""

SCHEMA_PROGRAM = 500_000
"""The RE2 instructions one schema's distinct patterns may compile to in all (about a quarter
of a second of compiling when the listing is read; an ordinary pattern needs a few to a few
thousand)."""

# No Python recursion over deeper arguments: json and jsonschema recurse once per level.
# (Their size is the tool gate's limit, `SizeLimits.tool_args_chars`, not this one's.)
_LIMITS = ToolArgLimits(max_depth=100, max_string_chars=sys.maxsize)
# Arguments this flat never run a checked schema out of stack (schema_refs.py bounds what one
# level of them may take): if they do, the schema is at fault, not the arguments.
_FLAT = ToolArgLimits(max_depth=3, max_string_chars=sys.maxsize)


class Schema:
    """A tool's inputSchema (or outputSchema), checked and compiled once per listing."""

    __slots__ = ("_validator", "source")

    def __init__(self, source: dict[str, Any], what: str = "inputSchema") -> None:
        """Check `source` (ValueError saying why it cannot be used)."""
        from jsonschema import Draft202012Validator, SchemaError
        from jsonschema.validators import validator_for

        if not isinstance(source, dict) or (
            what == "inputSchema" and source.get("type", "object") != "object"
        ):
            raise ValueError(f"its {what} is not a JSON Schema of an object")
        try:
            # An unknown `$schema` is read as the latest draft (later jsonschema refuses it).
            cls = validator_for(source, default=Draft202012Validator)
            cls.check_schema(source)
        except SchemaError as exc:
            raise ValueError(f"its {what} is not valid JSON Schema: {exc.message}") from None
        except RecursionError:
            raise ValueError(f"its {what} is nested too deeply") from None
        checked = guarded(cls)
        problem = unusable(source, checked) or ref_problem(cls, source)
        if problem is not None:
            raise ValueError(f"its {what} {problem}")
        self.source = source
        # A `$ref` resolves inside the schema (and the metaschemas), never over the network,
        # where jsonschema's default would fetch a URL the server chose.
        self._validator = local_validator(checked, source)

    @classmethod
    def of(cls, source: Any, what: str, before: Schema | None) -> Schema:
        """A Schema of `source`: `before` when it was built from the same (compiling its
        patterns takes time), else a new one (ValueError saying why it cannot be used)."""
        return before if before is not None and before.source == source else cls(source, what)

    def problems(self, value: Any, root: str = "(arguments)") -> list[str]:
        """One line per way `value` fails the schema (empty when it fits), each naming where
        (from `root`); the patterns of one check share one bounded amount of work."""
        with patterns.metered():
            found = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        return [f"- {_where(e.absolute_path, root)}: {e.message}" for e in found]


# ------------------------------------------------------------------ regular expressions
# jsonschema runs `pattern`, `patternProperties` (and `additionalProperties` beside it) with
# Python's `re`; these are its keywords on RE2 (patterns.py) instead.


def _search(pattern: str, text: str) -> bool:
    return patterns.compiled(pattern).search(text)


def _too_long(what: str, pattern: str, keyword: str) -> Any:
    from jsonschema import ValidationError

    return ValidationError(
        f"{what} too long to check against the {keyword} {_short(pattern)} within "
        "loomgraph's limit on checking work; send shorter text"
    )


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "string"):
        return
    try:
        found = _search(pattern, instance)
    except patterns.PatternTooCostly:
        yield _too_long(f"{_short(instance)} ({len(instance):,} characters) is", pattern, "pattern")
        return
    if not found:  # jsonschema's message, with a long text or pattern shortened
        yield ValidationError(f"{_short(instance)} does not match {_short(pattern)}")


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
    """`cls` (a jsonschema validator class) with its regex keywords on RE2 (patterns.py)."""
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
                    return f"{keyword} {_short(regex)} at {here} cannot be checked safely: {exc}"
                if program > SCHEMA_PROGRAM:
                    return (
                        f"{keyword} {_short(regex)} at {here} cannot be checked safely: the "
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


def _short(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}..."


def check_arguments(tool: str, args: dict[str, Any], schema: Schema | None) -> ToolResult | None:
    """An `invalid_arguments` result for arguments that are not plain JSON or fail the
    tool's schema, or None when they may be sent."""
    problem = _not_plain_json(args)
    if problem is None and schema is not None:
        try:
            lines = schema.problems(args)
        except RecursionError:
            if _flat(args):  # (what the listing did not see): the schema's own recursion
                return error_result(
                    "tool_exception",
                    f"Tool {tool!r} cannot be called: checking its inputSchema runs out of "
                    "stack whatever the arguments (its $refs recurse).",
                )
            lines = ["- (arguments): nested too deeply to check against the schema"]
        except patterns.PatternUnsupported as exc:  # (what the listing did not see)
            return error_result(
                "tool_exception",
                f"Tool {tool!r} cannot be called: a regular expression of its inputSchema "
                f"cannot be checked safely ({exc}).",
            )
        except Exception as exc:  # An unresolvable $ref: the schema's fault
            return error_result(
                "tool_exception",
                f"Tool {tool!r} cannot be called: its inputSchema cannot be checked ({exc}); "
                "a $ref outside the schema is not followed.",
            )
        if lines:
            problem = "\n" + "\n".join(lines)
    if problem is None:
        return None
    return error_result(INVALID_ARGUMENTS, f"Invalid arguments for tool {tool!r}:{problem}")


def check_output(tool: str, result: Any, schema: Schema | None) -> ToolResult | None:
    """A `tool_exception` result for a result (an mcp CallToolResult) whose structuredContent
    is missing or fails the tool's outputSchema, or None when it may be used."""
    if schema is None or result.is_error:
        return None  # (an error result need not have the output's shape: the SDK's rule)
    structured = result.structured_content
    if structured is None and "structured_content" not in result.model_fields_set:
        problem = " it has an outputSchema but returned no structuredContent"
    else:
        try:
            check_tool_args({"structuredContent": structured}, _LIMITS)
            lines = schema.problems(structured, "(structuredContent)")
        except ToolArgsRejected as exc:
            lines = [f"- (structuredContent): {exc}"]
        except RecursionError:
            lines = ["- (structuredContent): nested too deeply to check against the schema"]
        except Exception as exc:  # (an unresolvable $ref: what the listing did not see)
            lines = [f"- (structuredContent): its outputSchema cannot be checked ({exc})"]
        if not lines:
            return None
        problem = " its structuredContent does not fit its outputSchema:\n" + "\n".join(lines)
    return error_result("tool_exception", f"Tool {tool!r} returned bad output:{problem}")


def _flat(args: dict[str, Any]) -> bool:
    try:
        check_tool_args(args, _FLAT)
    except ToolArgsRejected:
        return False
    return True


def _not_plain_json(args: dict[str, Any]) -> str | None:
    # The SDK would fail to write these (a lone surrogate is not UTF-8) and drop the whole
    # connection, or silently send something else (NaN as null).
    try:
        check_tool_args(args, _LIMITS)
    except ToolArgsRejected as exc:
        return f" {exc}"
    try:
        json.dumps(args, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        return " a string holds a lone surrogate (not valid Unicode text)"
    except (TypeError, ValueError) as exc:
        return f" not plain JSON ({exc})"
    return None


def _where(path: Any, root: str) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or root

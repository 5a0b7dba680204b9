"""What a server's listing and the model's arguments must meet before loomgraph uses them.

An MCP server is another program: its tool names and schemas are checked as a local tool's
are when it is built, and the model's arguments are checked against the schema before they
leave, so a bad call is the model's `invalid_arguments`, not the server's problem. A
result's structuredContent is checked here against the tool's outputSchema too, not by the
SDK (`check_output`). `jsonschema` is imported only when a server lists its tools. The
schemas' regular expressions run on RE2 (`tools.schema_patterns`), never on Python's `re`.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from loomgraph.protocols import (
    INVALID_ARGUMENTS,
    ToolArgLimits,
    ToolArgsRejected,
    ToolResult,
    check_tool_args,
)
from loomgraph.tools.json_schema import local_validator
from loomgraph.tools.mcp.schema_refs import ref_problem
from loomgraph.tools.re2_patterns import PatternUnsupported, metered
from loomgraph.tools.results import error as error_result
from loomgraph.tools.schema_patterns import guarded, unusable

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
"""What Anthropic and OpenAI accept as a tool name (the rule local tools meet, tools/tool.py).
Use it with `fullmatch`: `\\Z`, not `$`, which also matches before a final newline."""

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
        with metered():
            found = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        return [f"- {_where(e.absolute_path, root)}: {e.message}" for e in found]


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
        except PatternUnsupported as exc:  # (what the listing did not see)
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

"""What a server's listing and the model's arguments must meet before loomgraph uses them.

An MCP server is another program: its tool names and schemas are checked as a local tool's
are when it is built, and the model's arguments are checked against the schema before they
leave, so a bad call is the model's `invalid_arguments`, not the server's problem.
`jsonschema` is imported only when a server lists its tools.
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
from loomgraph.tools.results import error as error_result

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What Anthropic and OpenAI accept as a tool name (the rule local tools meet, tools/tool.py)."""

# No Python recursion over deeper arguments: json and jsonschema recurse once per level.
# (Their size is the tool gate's limit, `SizeLimits.tool_args_chars`, not this one's.)
_LIMITS = ToolArgLimits(max_depth=100, max_string_chars=sys.maxsize)


class Schema:
    """A tool's inputSchema, checked and compiled once per listing."""

    __slots__ = ("_validator", "source")

    def __init__(self, source: dict[str, Any]) -> None:
        """Check `source` (ValueError saying why it cannot be used)."""
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for
        from referencing import Registry

        if source.get("type", "object") != "object":
            raise ValueError("its inputSchema is not a JSON Schema of an object")
        try:
            cls = validator_for(source)
            cls.check_schema(source)
        except SchemaError as exc:
            raise ValueError(f"its inputSchema is not valid JSON Schema: {exc.message}") from None
        except RecursionError:
            raise ValueError("its inputSchema is nested too deeply") from None
        self.source = source
        # An empty registry: a `$ref` resolves inside the schema (and the metaschemas), never
        # over the network, where jsonschema's default would fetch a URL the server chose.
        self._validator = cls(source, registry=Registry())

    def problems(self, args: dict[str, Any]) -> list[str]:
        """One line per way `args` fails the schema (empty when they fit)."""
        found = sorted(self._validator.iter_errors(args), key=lambda e: list(e.path))
        return [f"- {_where(e.absolute_path)}: {e.message}" for e in found]


def check_arguments(tool: str, args: dict[str, Any], schema: Schema | None) -> ToolResult | None:
    """An `invalid_arguments` result for arguments that are not plain JSON or fail the
    tool's schema, or None when they may be sent."""
    problem = _not_plain_json(args)
    if problem is None and schema is not None:
        try:
            lines = schema.problems(args)
        except RecursionError:
            lines = ["- (arguments): nested too deeply"]
        except Exception as exc:  # Unresolvable $ref, a bad pattern: the schema's fault
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


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(arguments)"

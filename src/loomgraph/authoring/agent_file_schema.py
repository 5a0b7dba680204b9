"""An agent file past its schema: pydantic's errors as problems at their lines, and the data
without what failed, so the checks past the schema still run on the rest (every problem at
once: `agent_file.load_agent_file`)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from loomgraph.authoring import agent_spec as s
from loomgraph.authoring.agent_spec import AgentSpec, ModelSpec
from loomgraph.errors import Problem
from loomgraph.protocols.safe_yaml import Lines

__all__ = ["line_at", "schema_problems", "without_failures"]


# Stand-ins for the required keys, when they failed the schema (reported already), so the
# parts that fit it can still be checked: what checks those parts reads neither.
_PLACEHOLDERS = {"schema_version": 1, "name": "agent"}


def without_failures(
    data: dict[str, Any], err: ValidationError
) -> tuple[dict[str, Any], list[int]]:
    """The file's data without what failed the schema, for the checks past it: a key that
    failed (or that the spec does not have) is left out, so it takes its default and is not
    checked; a `tools` entry that failed is left out alone. Also the index in the file of
    each tool left (for the lines of their problems)."""
    partial: dict[Any, Any] = dict(data)
    failed_tools: set[int] = set()
    for e in err.errors():
        loc = tuple(e["loc"])
        if not loc:
            continue
        tools = partial.get("tools")
        if (
            loc[0] == "tools"
            and len(loc) >= 2
            and isinstance(loc[1], int)
            and isinstance(tools, list)
        ):
            failed_tools.add(loc[1])
        else:
            partial.pop(loc[0], None)
    tools = partial.get("tools")
    kept = (
        [i for i in range(len(tools)) if i not in failed_tools] if isinstance(tools, list) else []
    )
    if isinstance(tools, list):
        partial["tools"] = [tools[i] for i in kept]
    for key, value in _PLACEHOLDERS.items():
        partial.setdefault(key, value)
    return partial, kept


def line_at(lines: Lines, path: tuple[Any, ...]) -> int | None:
    """The source line of a data path, or of its nearest parent that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def schema_problems(err: ValidationError, data: Any, lines: Lines, file: str) -> list[Problem]:
    """Pydantic's errors as Problems at their lines: union branches folded (a mapping where a
    name could also go reports the mapping's errors), unknown keys with a suggestion."""
    found: list[tuple[tuple[Any, ...], Problem]] = []
    for e in err.errors():
        full = tuple(e["loc"])
        loc = _data_path(data, full)
        where = ".".join(str(p) for p in loc) or "the top level"
        if e["type"] == "extra_forbidden":
            rule, message = "unknown-key", _unknown_key(loc, data)
        elif e["type"] == "missing":
            rule, message = "schema", f"{where}: missing key {full[-1]!r}"
        else:
            rule, message = "schema", f"{where}: {e['msg']}"
            if e["type"] == "literal_error" and loc == ("schema_version",):
                message += " (the only agent-file version is 1)"
        problem = Problem(rule, message, file, line_at(lines, loc))
        if problem not in (p for _, p in found):
            found.append((loc, problem))
    branch_types = ("valid string", "valid dictionary", "Unable to extract tag")
    kept = [
        p
        for loc, p in found
        if not any(t in p.message for t in branch_types)
        or not any(
            (o[: len(loc)] == loc and o != loc) or (q.rule != p.rule and o == loc)
            for o, q in found
            if q is not p
        )
    ]
    return sorted(kept, key=lambda p: p.line or 0)


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The part of a pydantic location that names places in the data (not union branches)."""
    path: list[Any] = []
    here = data
    for part in loc:
        inside = isinstance(here, dict) and part in here
        if not inside and not (isinstance(here, list) and isinstance(part, int)):
            continue
        if isinstance(here, list) and not 0 <= part < len(here):
            continue
        here = here[part]
        path.append(part)
    return tuple(path)


def _unknown_key(loc: tuple[Any, ...], data: Any) -> str:
    key = loc[-1] if loc else "?"
    options = _allowed_keys(loc[:-1], data)
    close = difflib.get_close_matches(str(key), options, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = ".".join(str(p) for p in loc[:-1]) or "the top level"
    return f"unknown key {key!r} in {where}{hint}; known keys: {', '.join(options)}"


def _allowed_keys(parent: tuple[Any, ...], data: Any) -> list[str]:
    """The keys the model at `parent` accepts (following the data through the spec)."""
    model: Any = AgentSpec
    here = data
    for part in parent:
        here = here[part]
        if isinstance(part, int):
            continue
        if model is AgentSpec and part == "tools":
            continue
        fields = getattr(model, "model_fields", {})
        nested = {
            "model": ModelSpec,
            "budget": s.BudgetSpec,
            "per_user": s.CapsSpec,
            "audit_log": s.AuditLogSpec,
            "telemetry": s.TelemetrySpec,
        }.get(str(part))
        if nested is not None:
            model = nested
        elif model is s.BudgetSpec and part == "users":
            model = s.CapsSpec
        elif part not in fields:
            model = s.CapsSpec  # a user's caps under budget.users
    if isinstance(here, dict) and "mcp" in here:
        model = s.MCPHttpSpec if here["mcp"] == "http" else s.MCPStdioSpec
    return sorted(getattr(model, "model_fields", {}))

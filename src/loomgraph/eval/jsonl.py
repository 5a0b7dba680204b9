"""JSON Lines dataset files: one case per line, each with its line number."""

from __future__ import annotations

import json
from typing import Any

from loomgraph.errors import Problem
from loomgraph.protocols.safe_yaml import MAX_YAML_DEPTH

__all__ = ["parse_jsonl"]

_TOO_DEEP = f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep"


def parse_jsonl(
    text: str, file: str
) -> tuple[dict[str, Any] | None, dict[tuple[str | int, ...], int], list[Problem]]:
    """`{"cases": [...]}` of the lines of `text`, the line of each case (keyed as YAML's
    are: `("cases", index)`) and the problems of the lines that are no case; None for the
    data when no line is a case and some line has a problem (not also "a dataset needs at
    least one case")."""
    cases: list[Any] = []
    lines: dict[tuple[str | int, ...], int] = {(): 1}
    problems: list[Problem] = []
    # Only "\n" ends a line: a JSON string may hold U+2028 and the others `splitlines` takes.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem("json-syntax", err.msg, file, number))
            continue
        except RecursionError:
            problems.append(Problem("json-too-deep", _TOO_DEEP, file, number))
            continue
        except ValueError as err:  # an integer over Python's 4300 digits
            problems.append(Problem("json-syntax", str(err), file, number))
            continue
        # The line is a case: as deep in the dataset as `cases: [...]` puts it in YAML.
        if _depth(case) + 2 >= MAX_YAML_DEPTH:
            problems.append(Problem("json-too-deep", _TOO_DEEP, file, number))
            continue
        cases.append(case)
        lines[("cases", len(cases) - 1)] = number
    if problems and not cases:
        return None, lines, problems
    return {"cases": cases}, lines, problems


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in `value` (a scalar: 0), without recursing."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest

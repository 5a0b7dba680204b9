"""JSON dataset files: JSON Lines (one case per line) and JSON (a whole dataset), each part
with its line, and a key written twice in one object refused at its line (as in YAML)."""

from __future__ import annotations

import json
from typing import Any

from loomgraph.errors import Problem
from loomgraph.eval.json_located import locate_json
from loomgraph.protocols.safe_yaml import MAX_YAML_DEPTH, Duplicate, Lines

__all__ = ["parse_json", "parse_jsonl"]

_TOO_DEEP = f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep"


def parse_jsonl(text: str, file: str) -> tuple[dict[str, Any] | None, Lines, list[Problem]]:
    """`{"cases": [...]}` of the lines of `text`, the line of each case and of every part
    of it (keyed as YAML's are: `("cases", index, ...)`) and the problems of the lines (a
    line that is no case, a key given twice in one); None for the data when no line is a
    case and some line has a problem (not also "a dataset needs at least one case")."""
    cases: list[Any] = []
    lines: Lines = {(): 1}
    problems: list[Problem] = []
    # Only "\n" ends a line: a JSON string may hold U+2028 and the others `splitlines` takes.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        case, problem = _loaded(line, file, number)
        if problem is not None:
            problems.append(problem)
            continue
        # The line is a case: as deep in the dataset as `cases: [...]` puts it in YAML.
        if _depth(case) + 2 >= MAX_YAML_DEPTH:
            problems.append(Problem("json-too-deep", _TOO_DEEP, file, number))
            continue
        located, duplicates = locate_json(line, ("cases", len(cases)), number)
        lines.update(located)
        problems.extend(_duplicate(d, file) for d in duplicates)
        cases.append(case)
    if problems and not cases:
        return None, lines, problems
    return {"cases": cases}, lines, problems


def parse_json(text: str, file: str) -> tuple[Any, Lines, list[Problem]]:
    """The JSON document `text` as data, the line of each part of it (an object's member at
    its key) and its problems: a syntax error, nesting deeper than YAML's limit (the data is
    then None), a key given twice in one object (the data keeps the last, as YAML's)."""
    data, problem = _loaded(text, file, 1)
    if problem is not None:
        return None, {}, [problem]
    if _depth(data) >= MAX_YAML_DEPTH:
        return None, {}, [Problem("json-too-deep", _TOO_DEEP, file, None)]
    lines, duplicates = locate_json(text)
    return data, lines, [_duplicate(d, file) for d in duplicates]


def _loaded(text: str, file: str, first_line: int) -> tuple[Any, Problem | None]:
    """`text` read as JSON, or the problem that it is not (at its line)."""
    try:
        return json.loads(text, parse_constant=_not_json), None
    except json.JSONDecodeError as err:
        line = first_line + err.lineno - 1
        return None, Problem("json-syntax", f"{err.msg} (column {err.colno})", file, line)
    except RecursionError:
        return None, Problem("json-too-deep", _TOO_DEEP, file, first_line)
    except ValueError as err:  # an integer over Python's 4300 digits; NaN, Infinity
        return None, Problem("json-syntax", str(err), file, first_line)


def _not_json(name: str) -> Any:
    """Refuse `NaN`, `Infinity` and `-Infinity`, which Python's reader takes and JSON has not:
    a case's expected number would then compare unequal to everything, or to nothing."""
    raise ValueError(f"{name} is not a JSON value (write a number, or a string)")


def _duplicate(duplicate: Duplicate, file: str) -> Problem:
    where = ".".join(str(p) for p in duplicate.mapping) or "the top level"
    message = f"key {duplicate.key!r} appears twice in {where}; give each key once"
    return Problem("duplicate-name", message, file, duplicate.line)


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in `value` (a scalar: 0), without recursing."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest

"""The built-in graphs parsed ahead, so an agent on one loads no YAML parser.

Each `graphs/NAME.yaml` shipped with loomgraph has `NAME.parsed.json` beside it: the data and
the line of each data path that parsing the YAML gives, and the SHA-256 of the text it was
parsed from. A twin whose digest is not the file's (a graph edited in a checkout) is ignored
and the YAML is parsed, so a stale twin costs time, never correctness;
tests/test_parsed_graphs.py fails until `python scripts/parse_graphs.py` rewrites it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loomgraph.protocols.safe_yaml import Lines

__all__ = ["parsed_path", "parsed_text", "read_parsed"]


def parsed_path(path: Path) -> Path:
    """Where the graph file `path` keeps its parsed twin."""
    return path.with_name(f"{path.stem}.parsed.json")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_parsed(path: Path, text: str) -> tuple[Any, Lines] | None:
    """The data and lines of graph file `path` (whose text is `text`) from its twin, or None
    when it has none, or one parsed from another text."""
    try:
        twin = json.loads(parsed_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(twin, dict) or twin.get("sha256") != _digest(text):
        return None
    lines = {tuple(where): line for where, line in twin["lines"]}
    return twin["data"], lines


def parsed_text(text: str, data: Any, lines: Lines) -> str:
    """The twin of a graph file whose text is `text`, parsed into `data` and `lines`."""
    twin = {
        "sha256": _digest(text),
        "data": data,
        "lines": [[list(where), line] for where, line in lines.items()],
    }
    return json.dumps(twin, ensure_ascii=False, indent=1) + "\n"

"""Rewrite the parsed twin of every built-in graph (`graphs/NAME.parsed.json`) from its YAML.

Run after editing a file in graphs/: `python scripts/parse_graphs.py`.
"""

from __future__ import annotations

from loomgraph.authoring.loader import builtin_dir, parse_yaml
from loomgraph.authoring.parsed_graphs import parsed_path, parsed_text


def main() -> None:
    """Parse each built-in graph file and write its twin."""
    for path in sorted(builtin_dir().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        data, lines, problems = parse_yaml(text, str(path))
        if problems:
            raise SystemExit(f"{path}: {problems}")
        parsed_path(path).write_text(parsed_text(text, data, lines), encoding="utf-8")
        print(f"wrote {parsed_path(path)}")


if __name__ == "__main__":
    main()

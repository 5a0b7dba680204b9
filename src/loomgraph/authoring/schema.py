"""The JSON Schema of graph files, generated from the spec models (for editors and CI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loomgraph.graph.spec import Graph

SCHEMA_FILE = Path(__file__).with_name("graph.schema.json")


def graph_json_schema() -> dict[str, Any]:
    """The JSON Schema a graph YAML file must follow."""
    schema = Graph.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def write_schema_file(path: Path = SCHEMA_FILE) -> None:
    """Regenerate the shipped schema file."""
    path.write_text(json.dumps(graph_json_schema(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_schema_file()

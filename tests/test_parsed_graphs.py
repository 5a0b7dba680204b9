"""The built-in graphs parsed ahead (`authoring.parsed_graphs`): current, equal to parsing the
YAML, ignored when stale, and an agent on a built-in graph loads no YAML parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import builtin_dir, graph_from_yaml, parse_yaml
from loomgraph.authoring.parsed_graphs import parsed_path, parsed_text, read_parsed

BUILTIN = sorted(builtin_dir().glob("*.yaml"))


@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.stem)
def test_each_built_in_graph_is_parsed_ahead_as_its_yaml_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    data, lines, problems = parse_yaml(text, str(path))
    assert problems == []
    parsed = read_parsed(path, text)
    assert parsed is not None, f"{parsed_path(path).name} is stale: python scripts/parse_graphs.py"
    assert parsed == (data, lines)
    assert load_graph(path.stem.replace("_", "-")) == graph_from_yaml(text, file=str(path))


def test_a_twin_parsed_from_another_text_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    text = "name: g\n"
    parsed_path(path).write_text(parsed_text("name: other\n", {"name": "other"}, {(): 1}))
    assert read_parsed(path, text) is None
    parsed_path(path).write_text(parsed_text(text, {"name": "g"}, {(): 1, ("name",): 1}))
    assert read_parsed(path, text) == ({"name": "g"}, {(): 1, ("name",): 1})


@pytest.mark.parametrize("twin", ["", "{", "[]", '{"sha256": 1}'])
def test_an_unreadable_twin_is_ignored(tmp_path: Path, twin: str) -> None:
    path = tmp_path / "g.yaml"
    parsed_path(path).write_text(twin)
    assert read_parsed(path, "name: g\n") is None


def test_an_agent_on_a_built_in_graph_loads_no_yaml_parser() -> None:
    code = (
        "import sys\n"
        "from loomgraph import Agent\n"
        "from loomgraph.models import ScriptedModel\n"
        "Agent('x', model=ScriptedModel(['hi']), architecture='plan-execute')\n"
        "print('yaml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

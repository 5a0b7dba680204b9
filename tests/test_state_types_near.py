"""A state type named by import path (`type: "steps:Report"`) is found as a `function`
node's `call` is: next to the graph file, then in the current directory (no PYTHONPATH=.),
then in the installed packages; and whatever was imported before does not matter.

Each test writes a real graph file and a real module with a name no other test uses, runs
from another directory, and removes the module from sys.modules afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphValidationError
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import StateSchema, TypeSyntaxError, parse_type

STEPS = """\
from pydantic import BaseModel

class Report(BaseModel):
    steps: int
    summary: str

def finish(state):
    return {"report": {"steps": 2, "summary": "a; b"}, "output": "done"}

NOT_A_MODEL = 3
"""

GRAPH = """\
schema_version: 1
name: typed
state:
  report: {{type: "{module}:Report | None"}}
entry: finish
nodes:
  finish: {{kind: function, call: "{module}:finish", reads: [], writes: [report, output]}}
edges:
  - {{from: finish, to: END}}
"""


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, str]]:
    """(graph file, module name): the module beside the graph; the cwd somewhere else."""
    module = f"lgtest_steps_{request.node.name.split('[')[0][-20:]}"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{module}.py").write_text(STEPS)
    graph_file = folder / "typed.yaml"
    graph_file.write_text(GRAPH.format(module=module))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sys.modules.pop(module, None)
    yield graph_file, module
    sys.modules.pop(module, None)


def test_a_model_is_found_next_to_the_file_naming_it(project: tuple[Path, str]) -> None:
    graph_file, module = project
    found = parse_type(f"list[{module}:Report]", near=graph_file)
    (report,) = found.__args__
    assert report.__name__ == "Report" and report.__module__ == module
    assert str(graph_file.parent) not in sys.path  # put on the path for the import only


def test_a_model_is_found_in_the_current_directory(
    project: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    graph_file, module = project
    monkeypatch.chdir(graph_file.parent)
    assert parse_type(f"{module}:Report").__name__ == "Report"


def test_a_model_not_found_says_where_it_looked(project: tuple[Path, str]) -> None:
    graph_file, module = project
    with pytest.raises(TypeSyntaxError) as err:
        parse_type(f"{module}:Report")  # neither near the graph nor in the cwd
    assert f"cannot import type '{module}:Report'" in str(err.value)
    assert f"looked in {Path.cwd()}" in str(err.value)
    with pytest.raises(TypeSyntaxError, match=r"has no 'Reprot' \(did you mean 'Report'\?\)"):
        parse_type(f"{module}:Reprot", near=graph_file)


def test_a_name_that_is_no_model_says_what_it_is(project: tuple[Path, str]) -> None:
    graph_file, module = project
    with pytest.raises(TypeSyntaxError, match=r"is a function, not a pydantic model"):
        parse_type(f"{module}:finish", near=graph_file)
    with pytest.raises(TypeSyntaxError, match=r"is a int, not a pydantic model"):
        parse_type(f"{module}:NOT_A_MODEL", near=graph_file)


def test_a_module_that_fails_to_import_is_a_type_error_not_a_traceback(
    project: tuple[Path, str],
) -> None:
    graph_file, module = project
    (graph_file.parent / f"{module}_bad.py").write_text("raise RuntimeError('boom')\n")
    try:
        with pytest.raises(TypeSyntaxError, match=r"raised RuntimeError: boom"):
            parse_type(f"{module}_bad:Report", near=graph_file)
    finally:
        sys.modules.pop(f"{module}_bad", None)


def test_the_state_of_a_graph_file_uses_the_model_beside_it(project: tuple[Path, str]) -> None:
    graph_file, module = project
    graph = Graph.model_validate(
        {"name": "typed", "state": {"report": {"type": f"{module}:Report | None"}}}
    )
    graph._source = str(graph_file)
    schema = StateSchema(graph)
    checked = schema.check({"report": {"steps": "2", "summary": "a"}})
    assert checked == {"report": {"steps": 2, "summary": "a"}}


def test_a_graph_file_with_a_model_beside_it_validates_from_anywhere(
    project: tuple[Path, str],
) -> None:
    graph_file, _module = project
    graph = load_graph_file(graph_file)
    assert "report" in graph.state


# --------------------------------------------------------------------------- version


@pytest.mark.parametrize(("written", "read"), [('"1.10"', "1.10"), ("2", "2"), ("v1.10", "v1.10")])
def test_a_version_is_kept_as_written(tmp_path: Path, written: str, read: str) -> None:
    graph_file = tmp_path / "v.yaml"
    graph_file.write_text(VERSIONED.format(version=written))
    assert load_graph_file(graph_file).version == read


def test_a_version_yaml_read_as_a_fraction_is_refused_with_a_hint_to_quote_it(
    tmp_path: Path,
) -> None:
    graph_file = tmp_path / "v.yaml"
    graph_file.write_text(VERSIONED.format(version="1.10"))  # YAML reads the float 1.1
    with pytest.raises(GraphValidationError) as err:
        load_graph_file(graph_file)
    (problem,) = err.value.problems
    assert (problem.rule, problem.line) == ("schema", 2)
    assert "version 1.1 was read as a number" in problem.message
    assert 'quote it as you mean it, e.g. version: "1.1"' in problem.message


VERSIONED = """\
name: v
version: {version}
entry: n
nodes:
  n: {{kind: function, call: "copy:copy"}}
edges:
  - {{from: n, to: END}}
"""

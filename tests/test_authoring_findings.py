"""Findings on reading graph and agent files: a graph's `name` never names another file, a
module that fails to import in any way is an `import` problem, files are read bounded (bytes,
regular files only), and a misspelt graph key still reads as a graph."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loomgraph.authoring.agent_file import AgentFileError, load_agent_file
from loomgraph.authoring.library import UnknownGraph, load_graph
from loomgraph.authoring.loader import builtin_dir, load_graph_file, resolve_graph_ref
from loomgraph.cli.main import main
from loomgraph.errors import GraphError, GraphValidationError, Problem

REACT = (builtin_dir() / "react.yaml").read_text(encoding="utf-8")


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    return caught.value.problems


def named(name: str) -> str:
    """The built-in react graph under another name."""
    return REACT.replace("name: react", f"name: {name!r}", 1)


@pytest.fixture
def plain_dir() -> Iterator[Path]:
    """A folder whose path has no `-` (a built-in name's `-` is read as `_`)."""
    folder = Path(tempfile.mkdtemp(prefix="lgnames"))
    if "-" in str(folder):
        pytest.skip("the temporary folder's path holds a '-'")
    yield folder
    shutil.rmtree(folder)


def from_builtins(target: Path) -> str:
    """`target` (without .yaml) as a path relative to the built-in graphs' folder."""
    up = "../" * (len(builtin_dir().resolve().parts) - 1)
    return up + str(target.resolve()).lstrip("/")


# --------------------------------------------------------------------------- names


def test_a_graph_name_that_is_a_path_reads_no_other_file(plain_dir: Path) -> None:
    (plain_dir / "bad.yaml").write_text("name: [never closed\n")
    here = plain_dir / "g.yaml"
    here.write_text(named(from_builtins(plain_dir / "bad")))
    graph = load_graph_file(here)  # valid: bad.yaml's syntax error is not this file's
    assert graph.name.endswith("/bad")


def test_a_graph_named_after_its_own_path_loads(plain_dir: Path) -> None:
    path = plain_dir / "self.yaml"
    path.write_text(named(from_builtins(plain_dir / "self")))
    assert load_graph_file(path).name.endswith("/self")


def test_a_subgraph_reference_is_a_builtin_name_or_a_yaml_path(plain_dir: Path) -> None:
    (plain_dir / "other.yaml").write_text(REACT)
    parent = load_graph("react")
    with pytest.raises(GraphError, match="neither a graph file nor a built-in graph"):
        resolve_graph_ref(from_builtins(plain_dir / "other"), parent)
    with pytest.raises(UnknownGraph):
        load_graph("..")
    assert resolve_graph_ref("plan-execute", parent).name == "plan-execute"
    assert load_graph("plan_execute").name == "plan-execute"


# --------------------------------------------------------------------------- imports


def _module(tmp_path: Path, body: str) -> str:
    name = f"probe_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(body)
    return name


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("raise RuntimeError('kaboom')\n", "RuntimeError: kaboom"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
    ],
)
@pytest.mark.parametrize("key", ["tools", "model"])
def test_a_module_failing_on_import_is_an_import_problem(
    tmp_path: Path, body: str, said: str, key: str
) -> None:
    module = _module(tmp_path, body)
    value = f'["{module}:x"]' if key == "tools" else f'"{module}:x"'
    path = tmp_path / "a.yaml"
    path.write_text(
        f"schema_version: 1\nname: a\nmodel: echo\n{key}: {value}\n".replace(
            "model: echo\nmodel:", "model:"
        )
    )
    with pytest.raises(AgentFileError) as caught:
        load_agent_file(path)
    (problem,) = caught.value.problems
    assert problem.rule == "import" and module in problem.message and said in problem.message


def test_a_function_node_whose_module_exits_is_a_kind_check(tmp_path: Path) -> None:
    module = _module(tmp_path, "import sys\nsys.exit(3)\n")
    path = tmp_path / "g.yaml"
    path.write_text(
        f"name: g\nentry: s\nnodes:\n  s: {{kind: function, call: '{module}:x', writes: []}}\n"
        "edges:\n  - {from: s, to: END}\n"
    )
    (problem,) = problems_of(path)
    assert problem.rule == "kind-check" and "SystemExit: 3" in problem.message


def test_validate_reports_a_failing_import_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "boom.py").write_text("raise RuntimeError('kaboom')\n")
    (tmp_path / "exiter.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "ab.yaml").write_text(
        'schema_version: 1\nname: b\nmodel: echo\ntools: ["boom:x"]\n'
    )
    (tmp_path / "ae.yaml").write_text(
        'schema_version: 1\nname: b\nmodel: echo\ntools: ["exiter:x"]\n'
    )
    (tmp_path / "g.yaml").write_text(REACT)
    assert main(["validate", "ab.yaml", "ae.yaml", "g.yaml"]) == 1
    out = capsys.readouterr().out
    assert "[import]" in out and "RuntimeError: kaboom" in out and "SystemExit: 3" in out
    assert "g.yaml: ok" in out


def test_running_an_agent_file_whose_tool_fails_to_import_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loomgraph import Agent

    monkeypatch.chdir(tmp_path)
    module = _module(tmp_path, "import sys\nsys.exit(3)\n")
    (tmp_path / "a.yaml").write_text(
        f'schema_version: 1\nname: b\nmodel: echo\ntools: ["{module}:x"]\n'
    )
    with pytest.raises(AgentFileError, match="SystemExit: 3"):
        Agent.from_file(tmp_path / "a.yaml")
    assert main(["run", "--agent", "a.yaml", "hi"]) == 2
    assert "SystemExit: 3" in capsys.readouterr().err


# --------------------------------------------------------------------------- bounded reads


def test_the_size_limit_counts_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("description: " + "€" * 400_000 + "\n", encoding="utf-8")  # 1.2 MB
    (problem,) = problems_of(path)
    assert problem.rule == "yaml-too-large" and "1000000 bytes" in problem.message


def test_a_file_that_is_not_a_regular_file_is_refused_unread(tmp_path: Path) -> None:
    (problem,) = problems_of(Path(os.devnull))
    assert problem.rule == "unreadable-file" and "not a regular file" in problem.message
    with pytest.raises(AgentFileError, match="not a regular file"):
        load_agent_file(os.devnull)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_validate_does_not_wait_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", "validate", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not a regular file" in done.stdout


# --------------------------------------------------------------------------- graph or agent


def test_a_graph_with_a_misspelt_nodes_key_is_validated_as_a_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(REACT.replace("\nnodes:\n", "\nnode:\n"))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "unknown key 'node'" in out and "did you mean 'nodes'?" in out
    assert "instructions" not in out  # not read as an agent file


def test_an_agent_file_without_schema_version_is_validated_as_an_agent_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("name: a\nmodel: echo\ninstructions: Be brief.\n")
    assert main(["validate", str(path)]) == 1
    assert "missing key 'schema_version'" in capsys.readouterr().out


def test_a_folder_given_as_a_file_is_refused_by_name_and_validate_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, good = tmp_path / "adir", tmp_path / "g.yaml"
    folder.mkdir()
    good.write_text(REACT)
    (problem,) = problems_of(folder)
    assert problem.rule == "unreadable-file" and "not a regular file" in problem.message
    assert problem.file == str(folder)
    with pytest.raises(AgentFileError, match="not a regular file"):
        load_agent_file(folder)
    assert main(["validate", str(folder), str(good)]) == 1
    out = capsys.readouterr().out
    assert f"{folder}: [unreadable-file]" in out.replace(":0:", ":")
    assert f"{good}: ok" in out and "Errno" not in out

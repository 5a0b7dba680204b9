"""`loomgraph.authoring.scaffold`: the starting graph that `loomgraph new-graph NAME` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.authoring.loader import graph_from_yaml, graph_to_yaml, load_graph_file
from loomgraph.authoring.scaffold import new_graph_yaml, write_new_graph
from loomgraph.authoring.validate import validate_graph
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_the_written_file_is_a_valid_graph_that_round_trips(tmp_path: Path) -> None:
    path = write_new_graph("my-strategy", tmp_path)
    assert path == tmp_path / "my-strategy.yaml"
    graph = load_graph_file(path)  # raises GraphValidationError listing any problem
    assert validate_graph(graph) == []
    assert graph.name == "my-strategy"
    assert graph.entry == "model"
    assert {n: s.kind for n, s in graph.nodes.items()} == {
        "model": "model",
        "tools": "tools",
        "polish": "llm",
    }
    assert "style" in graph.state
    assert graph.nodes["model"].retry is not None and graph.nodes["model"].timeout == 120
    assert graph_from_yaml(graph_to_yaml(graph)) == graph


def test_every_section_is_explained() -> None:
    text = new_graph_yaml("explained")
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for topic in (
        "reducer",
        "replace",
        "append",
        "merge",
        "add",
        "kind",
        "reads",
        "writes",
        "when",
        "file order",
        "END",
        "max_visits",
        "max_node_visits",
        "retry",
        "timeout",
        "on_error",
        "entry",
        "loomgraph validate",
        "loomgraph render",
    ):
        assert topic in comments, topic
    for section in ("state:", "nodes:", "edges:", "limits:"):
        before = text.split(f"\n{section}")[0].splitlines()[-1]
        assert before.startswith("#"), f"no comment right above {section}"


async def test_the_starting_graph_runs_on_a_scripted_model(tmp_path: Path) -> None:
    prompts: list[str] = []
    turns: list[str | dict[str, Any]] = [
        {"tool_calls": [{"tool": "add", "args": {"a": 2, "b": 3}}]},
        "2 + 3 is 5.",
        "Five.",
    ]

    def model(request: ModelRequest) -> str | dict[str, Any]:
        prompts.append(str(request.messages[-1].get("content")))
        return turns[request.call_index]

    agent = Agent(
        "You add numbers.",
        model=ScriptedModel(model),
        tools=[add],
        architecture=write_new_graph("adder", tmp_path),
    )
    result = await agent.run("What is 2 + 3?")
    assert result.status == "completed"
    assert result.output == "Five."
    history = await agent.history(result.run_id)
    assert [(c.node, c.next_node) for c in history] == [
        ("", "model"),  # seq 0: the first state
        ("model", "tools"),
        ("tools", "model"),
        ("model", "polish"),
        ("polish", "END"),
    ]
    # The polish prompt got the question, the default style and the model's answer.
    assert "What is 2 + 3?" in prompts[-1]
    assert "clear and concise" in prompts[-1] and "2 + 3 is 5." in prompts[-1]


@pytest.mark.parametrize("name", ["2024", "yes", "null", "a_b-C9"])
def test_names_that_yaml_would_misread_stay_strings(name: str, tmp_path: Path) -> None:
    assert load_graph_file(write_new_graph(name, tmp_path)).name == name


@pytest.mark.parametrize(
    "name", ["", "my graph", "../escape", "a/b", "-flag", "_x", "naïve", "x" * 101, "name.yaml"]
)
def test_a_bad_name_is_a_clear_error_and_writes_nothing(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"invalid graph name .*letters, digits, '-' and '_'"):
        write_new_graph(name, tmp_path)
    with pytest.raises(ValueError, match="invalid graph name"):
        new_graph_yaml(name)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("# my own work\n")
    with pytest.raises(FileExistsError, match=r"mine\.yaml already exists; not overwriting"):
        write_new_graph("mine", tmp_path)
    assert mine.read_text() == "# my own work\n"


def test_the_directory_is_created_when_missing(tmp_path: Path) -> None:
    path = write_new_graph("nested", tmp_path / "graphs" / "mine")
    assert path.parent == tmp_path / "graphs" / "mine"
    assert load_graph_file(path).name == "nested"

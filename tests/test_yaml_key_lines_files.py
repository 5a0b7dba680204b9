"""The files people write besides graph files — agent files (a graph inline under
`architecture:` and inline `permissions:` too), permission files, eval datasets — report a
problem about a key at the key's own line, also when its value is a block starting below it
(it was reported one line late). And a mapping key YAML reads as no text (`null:`, `on:`,
`007:`, `1.5:`, `2024-01-02:`) is refused by the one YAML reader, with its line and a hint to
quote it, in every file (an agent file's inline `per_user: {null: …}` was user "None")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph.agent.from_file import validate_agent_file
from loomgraph.authoring.agent_file import AgentFileError
from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphValidationError, Problem
from loomgraph.eval import Dataset, DatasetError
from loomgraph.governance import PermissionConfigError, StandardPermissions
from loomgraph.protocols.safe_yaml import BoundedLoader, YamlRefused, locate
from test_yaml_key_lines import _DATA, _KEYS

AGENT_HEAD = "schema_version: 1\nname: bot\n"  # lines 1-2 of each agent file below


def _agent_problems(path: Path, text: str) -> list[Problem]:
    path.write_text(text)
    with pytest.raises(AgentFileError) as caught:
        validate_agent_file(path)
    return list(caught.value.problems)


def _lines_naming(problems: list[Problem], word: str) -> list[int | None]:
    return [p.line for p in problems if word in p.message]


# --------------------------------------------------------------------------- agent files


def test_an_agent_files_unknown_key_with_a_block_value_is_at_its_own_line(tmp_path: Path) -> None:
    problems = _agent_problems(
        tmp_path / "bot.yaml",
        AGENT_HEAD + "budgte:\n"  # 3: misspelt `budget`
        "  max_cost_usd: 1\n"  # 4
        "model:\n"  # 5
        "  name: echo\n"  # 6
        "  temprature: 0.5\n",  # 7: a scalar, at its line as before
    )
    assert _lines_naming(problems, "'budgte'") == [3], problems
    assert _lines_naming(problems, "'temprature'") == [7], problems


def test_an_agent_files_value_of_the_wrong_shape_is_at_its_key(tmp_path: Path) -> None:
    problems = _agent_problems(
        tmp_path / "bot.yaml",
        AGENT_HEAD + "budget:\n"  # 3
        "  users:\n"  # 4: a mapping of user ids is expected, not a list
        "    - alice\n",  # 5
    )
    assert {p.line for p in problems} == {4}, problems


def test_an_inline_graphs_key_is_at_its_line_and_its_nodes_at_their_first_line(
    tmp_path: Path,
) -> None:
    problems = _agent_problems(
        tmp_path / "bot.yaml",
        AGENT_HEAD + "architecture:\n"  # 3
        "  name: inline\n"  # 4
        "  entry: a\n"  # 5
        "  nodes:\n"  # 6
        "    a:\n"  # 7
        "      kind: llm\n"  # 8
        '      prompt: "{{ input }}"\n'  # 9
        "      output: output\n"  # 10
        "      retyr:\n"  # 11: the misspelt key
        "        attempts: 2\n"  # 12
        "    lonely:\n"  # 13
        "      kind: llm\n"  # 14: the first line inside the unreachable node
        '      prompt: "{{ input }}"\n'  # 15
        "  edges:\n"  # 16
        "    - {from: a, to: END}\n"  # 17
        "    - {from: lonely, to: END}\n",  # 18
    )
    assert _lines_naming(problems, "retyr") == [11], problems
    assert [p.line for p in problems if p.rule == "unreachable-node"] == [14], problems


def test_inline_permissions_report_a_key_at_its_line(tmp_path: Path) -> None:
    problems = _agent_problems(
        tmp_path / "bot.yaml",
        AGENT_HEAD + "permissions:\n"  # 3
        "  per_user:\n"  # 4
        "    alice:\n"  # 5
        "      allw:\n"  # 6: misspelt `allow`
        "        - shell\n",  # 7
    )
    assert _lines_naming(problems, "'allw'") == [6], problems


# --------------------------------------------------------------------------- permission files


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("allw:\n  - shell\n", 1),
        ("mode: strict\nper_user:\n  alice:\n    mode: default\n    dny:\n      - shell\n", 5),
        ("deny: [shell]\nsets:\n  team:\n    file: []\n", 3),  # a file that is no path
        ("deny: [shell]\nper_user:\n  alice:\n    - allow\n", 3),  # an entry that is no mapping
    ],
)
def test_a_permission_files_key_with_a_block_value_is_at_its_own_line(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "perms.yaml"
    path.write_text(text)
    with pytest.raises(PermissionConfigError) as caught:
        StandardPermissions.from_file(path)
    assert (caught.value.file, caught.value.line) == (str(path), line), str(caught.value)


# --------------------------------------------------------------------------- datasets


def _dataset_problems(path: Path, text: str) -> list[Problem]:
    path.write_text(text)
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    return list(caught.value.problems)


def test_a_datasets_keys_with_block_values_are_at_their_own_lines(tmp_path: Path) -> None:
    problems = _dataset_problems(
        tmp_path / "cases.yaml",
        "cases:\n"  # 1
        "  - id: a\n"  # 2
        "    input: hi\n"  # 3
        "    expect:\n"  # 4
        "      answr:\n"  # 5: misspelt `answer`
        "        exact: x\n"  # 6
        "    tags:\n"  # 7: a list is expected, not a mapping
        "      first: x\n"  # 8
        "extra:\n"  # 9: datasets have no `extra`
        "  - 1\n",  # 10
    )
    assert _lines_naming(problems, "answr") == [5], problems
    assert _lines_naming(problems, "tags") == [7], problems
    assert _lines_naming(problems, "extra") == [9], problems


# --------------------------------------------------------------------------- keys that are no text


# (key as written, what YAML reads it as)
NOT_TEXT = [
    ("null", "null"),
    ("~", "null"),
    ("on", "a boolean"),
    ("No", "a boolean"),
    ("007", "an integer"),
    ("12:30", "an integer"),
    ("1.5", "a number"),
    (".inf", "a number"),
    ("2024-01-02", "a date"),
]


def _graph(key: str) -> str:
    return (
        "name: g\n"  # 1
        "entry: a\n"  # 2
        "nodes:\n"  # 3
        "  a:\n"  # 4
        "    kind: llm\n"  # 5
        '    prompt: "{{ input }}"\n'  # 6
        "    output: output\n"  # 7
        "edges:\n"  # 8
        "  - {from: a, to: END}\n"  # 9
        f"{key}: x\n"  # 10: the graph's last key
    )


def _refused_graph(path: Path) -> tuple[str, int | None]:
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    [problem] = caught.value.problems
    return problem.message, problem.line


def _refused_agent(path: Path) -> tuple[str, int | None]:
    with pytest.raises(AgentFileError) as caught:
        validate_agent_file(path)
    [problem] = caught.value.problems
    return problem.message, problem.line


def _refused_permissions(path: Path) -> tuple[str, int | None]:
    with pytest.raises(PermissionConfigError) as caught:
        StandardPermissions.from_file(path)
    return caught.value.message, caught.value.line


def _refused_dataset(path: Path) -> tuple[str, int | None]:
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    return problem.message, problem.line


# Each reader, a document with the key on its last line, and how it refuses.
READERS: dict[str, tuple[Callable[[str], str], Callable[[Path], tuple[str, int | None]]]] = {
    "graph": (_graph, _refused_graph),
    "inline graph": (
        lambda key: AGENT_HEAD + "architecture:\n  " + _graph(key).rstrip().replace("\n", "\n  "),
        _refused_agent,
    ),
    "agent file": (
        lambda key: (
            AGENT_HEAD
            + "model:\n  name: echo\nbudget:\n  users:\n"
            + f"    {key}: {{cost_usd: 1}}\n"
        ),  # a user id under budget.users
        _refused_agent,
    ),
    "inline permissions": (
        lambda key: (
            AGENT_HEAD
            + "permissions:\n  deny: [shell]\n  per_user:\n    alice: {deny: [x]}\n\n"
            + f"    {key}: {{deny: [shell]}}\n"
        ),
        _refused_agent,
    ),
    "permission file": (
        lambda key: (
            "deny: [shell]\nsets:\n  team: [a]\nper_user:\n  alice:\n    deny: [x]\n\n"
            + f"  {key}: {{deny: [shell]}}\n"
        ),
        _refused_permissions,
    ),
    "dataset": (
        lambda key: (
            "name: d\ncases:\n  - id: a\n    input: hi\n    metadata:\n      team: x\n\n"
            + f"      {key}: y\n"
        ),
        _refused_dataset,
    ),
}


def _read_as_written(reader: str, path: Path, key: str) -> None:
    """The document with the key quoted is read with the key as written."""
    if reader in ("graph", "inline graph"):  # a graph has no such key: named as written
        with pytest.raises((GraphValidationError, AgentFileError)) as caught:
            (load_graph_file if reader == "graph" else validate_agent_file)(path)
        shown = [str(p) for p in caught.value.problems]
        assert any(f"unknown key {key!r}" in p for p in shown), shown
    elif reader == "permission file":
        assert key in StandardPermissions.from_file(path).per_user
    elif reader == "dataset":
        [case] = Dataset.load(path).cases
        assert set(case.metadata) == {"team", key}
    elif reader == "agent file":
        budget = validate_agent_file(path).spec.budget
        assert budget is not None and set(budget.users or {}) == {key}
    else:
        permissions = validate_agent_file(path).spec.permissions
        assert isinstance(permissions, dict) and set(permissions["per_user"]) == {"alice", key}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(("key", "read_as"), NOT_TEXT)
def test_a_key_yaml_reads_as_no_text_is_refused_at_its_line_by_every_reader(
    tmp_path: Path, reader: str, key: str, read_as: str
) -> None:
    document, refused = READERS[reader]
    path = tmp_path / ("cases.yaml" if reader == "dataset" else "file.yaml")
    text = document(key)
    rows = text.splitlines()
    assert rows[-1].strip().startswith(f"{key}:"), text
    path.write_text(text)
    message, line = refused(path)
    assert line == len(rows), (message, line)
    assert repr(key) in message and read_as in message and "quote" in message, message
    path.write_text(document(f"'{key}'"))
    _read_as_written(reader, path, key)


@pytest.mark.parametrize("reader", ["graph", "agent file", "dataset"])
def test_a_key_yaml_reads_as_no_text_is_a_yaml_key_problem(tmp_path: Path, reader: str) -> None:
    document, _ = READERS[reader]
    path = tmp_path / ("cases.yaml" if reader == "dataset" else "file.yaml")
    path.write_text(document("007"))
    errors = (GraphValidationError, AgentFileError, DatasetError)
    with pytest.raises(errors) as caught:
        {"graph": load_graph_file, "agent file": validate_agent_file, "dataset": Dataset.load}[
            reader
        ](path)
    assert [p.rule for p in caught.value.problems] == ["yaml-key"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\n? [x, y]\n: 2\n", 2),
        ("a:\n  ? {x: 1}\n  : 2\n", 2),
        ("a: 1\n!!binary aGk=: 2\n", 2),
        ("a: 1\n<<: {b: 2}\n", 2),
    ],
)
def test_a_key_that_is_a_list_mapping_binary_or_merge_is_refused_at_its_line(
    text: str, line: int
) -> None:
    # They were str()ed: `? [x, y]` became the key "[]", a binary key "b'hi'".
    with pytest.raises(YamlRefused) as caught:
        locate(BoundedLoader(text))
    assert (caught.value.kind, caught.value.line) == ("key", line), str(caught.value)


@pytest.mark.parametrize(
    ("value", "read_as"),
    [("2024-02-30", "a date"), ("2024-13-01", "a date"), ("!!float x", "a number")],
)
def test_a_value_yaml_cannot_build_is_refused_at_its_line(
    tmp_path: Path, value: str, read_as: str
) -> None:
    # A date that is none (`2024-02-30`) escaped the loaders as a bare ValueError.
    text = f"name: g\nversion: {value}\nentry: a\n"
    with pytest.raises(YamlRefused) as caught:
        locate(BoundedLoader(text))
    assert (caught.value.kind, caught.value.line) == ("value", 2), str(caught.value)
    assert read_as in str(caught.value) and "quote" in str(caught.value), str(caught.value)
    path = tmp_path / "g.yaml"
    path.write_text(text)
    message, line = _refused_graph(path)
    assert line == 2 and read_as in message, message


def test_an_int_keyed_state_default_is_written_with_quoted_keys(tmp_path: Path) -> None:
    # No reader needs int keys: pydantic reads a quoted key as the field's key type.
    path = tmp_path / "g.yaml"
    text = (
        "name: g\n"
        "state:\n"
        '  ranks: {type: "dict[int, str]", default: {1: one}}\n'  # 3
        "entry: a\n"
        "nodes:\n"
        '  a: {kind: llm, prompt: "{{ input }}", output: output}\n'
        "edges:\n"
        "  - {from: a, to: END}\n"
    )
    path.write_text(text)
    message, line = _refused_graph(path)
    assert line == 3 and "'1'" in message and "quote" in message, message
    path.write_text(text.replace("{1: one}", "{'1': one}"))
    assert load_graph_file(path).state["ranks"].default == {"1": "one"}


# --------------------------------------------------------------------------- the invariant


def _paths(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in [(*path, k), *_paths(v, (*path, k))]]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in [(*path, i), *_paths(v, (*path, i))]]
    return []


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(_KEYS, _DATA, min_size=1, max_size=4))
def test_key_first_puts_each_key_at_its_line_and_each_item_where_it_starts(
    data: dict[str, Any],
) -> None:
    from loomgraph.protocols.safe_yaml import key_first  # the mechanism under test

    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    located = locate(BoundedLoader(text))
    lines = key_first(located.lines)
    rows = text.splitlines()
    for path in _paths(data):
        written = rows[lines[path] - 1].lstrip(" -")
        if isinstance(path[-1], str):
            assert written.startswith((f"{path[-1]}:", f"'{path[-1]}':")), (path, text)
        else:  # a list item: where its value starts, as before
            assert lines[path] == located.lines[path]


def test_a_key_that_is_no_text_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    """It was refused alone, before anything else was read: a dataset's duplicate case id
    and a graph's unknown entry came only once the key was quoted."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "name: d\ncases:\n  - id: a\n    input: hi\n    on: x\n  - id: a\n    input: again\n"
    )
    with pytest.raises(DatasetError) as dataset:
        Dataset.load(cases)
    assert [(p.rule, p.line) for p in dataset.value.problems] == [
        ("yaml-key", 5),
        ("duplicate-case", 6),
    ]
    graph = tmp_path / "graph.yaml"
    graph.write_text(_graph("007").replace("entry: a", "entry: b"))
    with pytest.raises(GraphValidationError) as loaded:
        load_graph_file(graph)
    assert [(p.rule, p.line) for p in loaded.value.problems] == [
        ("yaml-key", 10),
        ("unknown-entry", 2),
    ]

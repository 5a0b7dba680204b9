"""A problem about a key is reported at the key's line, also when its value is a block that
starts on the lines below it (a misspelt `retyr:` with `attempts:` under it was reported one
line late, where its value starts); node-level problems keep the first line inside the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph.authoring.loader import load_graph_file
from loomgraph.errors import GraphValidationError, Problem
from loomgraph.protocols.safe_yaml import BoundedLoader, locate


def _problems(path: Path) -> list[Problem]:
    try:
        load_graph_file(path)
    except GraphValidationError as err:
        return list(err.problems)
    raise AssertionError(f"{path.name} loaded")


def _lines_naming(problems: list[Problem], word: str) -> list[int | None]:
    return [p.line for p in problems if word in p.message]


def test_an_unknown_param_with_a_block_value_is_reported_at_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "name: typo\n"  # 1
        "entry: a\n"  # 2
        "nodes:\n"  # 3
        "  a:\n"  # 4
        "    kind: llm\n"  # 5
        '    prompt: "{{ input }}"\n'  # 6
        "    output: output\n"  # 7
        "    retyr:\n"  # 8: the misspelt key
        "      attempts: 2\n"  # 9
        "edges:\n"  # 10
        "  - {from: a, to: END}\n"  # 11
    )
    problems = _problems(path)
    assert _lines_naming(problems, "retyr") == [8], problems


def test_a_param_whose_block_value_has_the_wrong_shape_is_reported_at_the_param(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shape.yaml"
    path.write_text(
        "name: shape\n"  # 1
        "entry: a\n"  # 2
        "nodes:\n"  # 3
        "  a:\n"  # 4
        "    kind: llm\n"  # 5
        '    prompt: "{{ input }}"\n'  # 6
        "    retry:\n"  # 7: a mapping is expected, not a list
        "      - 2\n"  # 8
        "edges:\n"  # 9
        "  - {from: a, to: END}\n"  # 10
    )
    problems = _problems(path)
    assert _lines_naming(problems, "retry") == [7], problems


def test_unknown_keys_with_block_values_at_the_top_of_a_state_field_and_an_edge(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "name: keys\n"  # 1
        "stat:\n"  # 2: misspelt `state`
        "  n:\n"  # 3
        "    type: int\n"  # 4
        "entry: a\n"  # 5
        "nodes:\n"  # 6
        '  a: {kind: llm, prompt: "{{ input }}", output: output}\n'  # 7
        "edges:\n"  # 8
        "  - from: a\n"  # 9
        "    to: END\n"  # 10
        "    note:\n"  # 11: edges have no `note`
        "      text: hi\n"  # 12
    )
    problems = _problems(path)
    assert _lines_naming(problems, "'stat'") == [2], problems
    assert _lines_naming(problems, "note") == [11], problems
    path.write_text(
        "name: keys\n"  # 1
        "state:\n"  # 2
        "  n:\n"  # 3
        "    type: int\n"  # 4
        "    extra:\n"  # 5: fields have no `extra`
        "      - 1\n"  # 6
        "entry: a\n"  # 7
        "nodes:\n"  # 8
        '  a: {kind: llm, prompt: "{{ input }}", output: output}\n'  # 9
        "edges:\n"  # 10
        "  - {from: a, to: END}\n"  # 11
    )
    problems = _problems(path)
    assert _lines_naming(problems, "extra") == [5], problems


def test_node_level_problems_keep_the_first_line_inside_the_node(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(
        "name: nodes\n"  # 1
        "entry: a\n"  # 2
        "nodes:\n"  # 3
        "  a:\n"  # 4
        "    kind: llm\n"  # 5
        '    prompt: "{{ input }}"\n'  # 6
        "    output: output\n"  # 7
        "  lonely:\n"  # 8
        "    kind: llm\n"  # 9: the first line inside the unreachable node
        '    prompt: "{{ input }}"\n'  # 10
        "    output: output\n"  # 11
        "    retyr:\n"  # 12
        "      attempts: 2\n"  # 13
        "edges:\n"  # 14
        "  - {from: a, to: END}\n"  # 15
        "  - {from: lonely, to: END}\n"  # 16
    )
    problems = _problems(path)
    assert [p.line for p in problems if p.rule == "unreachable-node"] == [9], problems
    assert _lines_naming(problems, "retyr") == [12], problems


# --------------------------------------------------------------------------- the invariant

_KEYS = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
_SCALARS = st.one_of(st.integers(-5, 5), st.booleans(), st.text(alphabet="xyz ", max_size=4))
_DATA = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(_KEYS, inner, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


def _key_paths(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in [(*path, k), *_key_paths(v, (*path, k))]]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _key_paths(v, (*path, i))]
    return []


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(_KEYS, _DATA, min_size=1, max_size=4))
def test_each_key_is_located_at_the_line_it_is_written_on(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    located = locate(BoundedLoader(text))
    assert located.data == data
    rows = text.splitlines()
    for path in _key_paths(data):
        line = located.key_lines[path]
        written = rows[line - 1].lstrip(" -")
        assert written.startswith((f"{path[-1]}:", f"'{path[-1]}':")), (path, line, text)
        # The value starts on that line, or below it (a block).
        assert located.lines[path] >= line


@pytest.mark.parametrize("text", ["a: 1\n", "- 1\n", "1\n", ""])
def test_only_the_keys_of_mappings_have_key_lines(text: str) -> None:
    located = locate(BoundedLoader(text))
    assert set(located.key_lines) == ({("a",)} if text.startswith("a") else set())

"""Findings on graph and agent files: deep nesting, secrets in diagrams, Mermaid injection,
and conditions that allocate without bound.

Real files in tmp_path, the real `loomgraph` command line, the real `dot` program.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jinja2 import TemplateSyntaxError

from loomgraph import Agent
from loomgraph.authoring.agent_file import AgentFileError, load_agent_file
from loomgraph.authoring.loader import graph_from_data, graph_from_yaml, load_graph_file
from loomgraph.authoring.render import render, to_dot, to_mermaid, to_svg
from loomgraph.errors import GraphValidationError
from loomgraph.graph.conditions import compile_condition, compile_template
from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec


def _cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _graph_yaml(description: str = "d", when: str = "input == 'x'") -> str:
    return (
        "schema_version: 1\nname: x\nentry: a\nnodes:\n"
        f"  a: {{kind: model, description: {description}}}\n"
        f'edges:\n  - {{from: a, to: END, when: "{when}"}}\n  - {{from: a, to: END}}\n'
    )


# --------------------------------------------------------------------------- 6: nesting

DEEP_FLOW = "[" * 400 + "]" * 400


def test_deeply_nested_yaml_graph_is_a_typed_problem(tmp_path: Path) -> None:
    path = tmp_path / "nest400.yaml"
    path.write_text(_graph_yaml(description=DEEP_FLOW))
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    (problem,) = caught.value.problems
    assert problem.rule == "yaml-too-deep"
    assert problem.file == str(path) and problem.line == 5
    assert "nest" in problem.message


def test_deeply_nested_block_mapping_is_a_typed_problem(tmp_path: Path) -> None:
    body = "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v: 1\n"
    with pytest.raises(GraphValidationError) as caught:
        graph_from_yaml(body, file="deep.yaml")
    assert caught.value.rules == {"yaml-too-deep"}


def test_an_integer_python_will_not_read_is_a_typed_problem() -> None:
    body = "name: g\nversion: " + "9" * 5000 + "\nnodes: {}\n"
    with pytest.raises(GraphValidationError) as caught:
        graph_from_yaml(body, file="big.yaml")
    (problem,) = caught.value.problems
    assert (problem.rule, problem.file, problem.line) == ("yaml-syntax", "big.yaml", 2)
    assert "integer too long" in problem.message


def test_ordinary_nesting_still_loads() -> None:
    nested = "{a: " * 20 + "1" + "}" * 20
    text = (
        "schema_version: 1\nname: x\nentry: a\n"
        f"state:\n  s: {{type: any, default: {nested}}}\n"
        "nodes:\n  a: {kind: model}\nedges:\n  - {from: a, to: END}\n"
    )
    assert graph_from_yaml(text).name == "x"


def test_deeply_nested_agent_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "agent_nest.yaml"
    path.write_text(
        f"schema_version: 1\nname: x\nmodel: echo\ninstructions: {'[' * 2000}{']' * 2000}\n"
    )
    with pytest.raises(AgentFileError) as caught:
        Agent.from_file(path)
    assert caught.value.problems[0].rule == "yaml-too-deep"
    assert caught.value.problems[0].line == 4
    with pytest.raises(AgentFileError):
        load_agent_file(path)


def test_nested_condition_is_a_bad_condition(tmp_path: Path) -> None:
    path = tmp_path / "paren100.yaml"
    path.write_text(_graph_yaml(when="(" * 100 + "1" + ")" * 100))
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    (problem,) = caught.value.problems
    assert problem.rule == "bad-condition" and problem.line == 7
    assert "nested too deeply" in problem.message


@pytest.mark.parametrize(
    "when",
    [
        "(" * 100 + "1" + ")" * 100,
        "not " * 1000 + "x",
        " + ".join(["1"] * 3000) + " > 0",
        "x" + ".a" * 2000,
        "- " * 1000 + "1",
        "x" + " | string" * 2000,
    ],
    ids=["parens", "not", "plus-chain", "attr-chain", "neg", "filter-chain"],
)
def test_nested_conditions_from_python_are_typed(when: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="nested too deeply"):
        compile_condition(when)
    graph = Graph(
        name="py",
        entry="a",
        nodes={"a": NodeSpec(kind="model")},
        edges=[EdgeSpec(source="a", target="END", when=when), EdgeSpec(source="a", target="END")],
    )
    with pytest.raises(GraphValidationError) as caught:
        Agent("x", model="echo", architecture=graph)
    assert caught.value.rules == {"bad-condition"}
    with pytest.raises(GraphValidationError):
        graph_from_data(graph.to_data())


def test_a_long_flat_condition_within_the_limit_runs() -> None:
    when = " or ".join(f"input == '{i}'" for i in range(30))
    assert compile_condition(when)(input="29") is True


def test_nested_template_is_a_bad_template() -> None:
    prompt = "{{ " + "(" * 100 + "input" + ")" * 100 + " }}"
    data = {
        "name": "t",
        "entry": "a",
        "nodes": {"a": {"kind": "llm", "prompt": prompt, "output": "output"}},
        "edges": [{"from": "a", "to": "END"}],
    }
    with pytest.raises(GraphValidationError) as caught:
        graph_from_data(data)
    assert caught.value.rules == {"bad-template"}
    with pytest.raises(TemplateSyntaxError, match="nested too deeply"):
        compile_template(prompt)


def test_nested_instructions_file_is_a_typed_problem(tmp_path: Path) -> None:
    (tmp_path / "prompt.md").write_text("{{ " + "(" * 200 + "name" + ")" * 200 + " }}")
    path = tmp_path / "agent.yaml"
    path.write_text("schema_version: 1\nname: x\nmodel: echo\ninstructions_file: prompt.md\n")
    with pytest.raises(AgentFileError) as caught:
        load_agent_file(path)
    assert caught.value.rules == {"instructions-template"}


def test_cli_validate_reports_nesting_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "nest400.yaml").write_text(_graph_yaml(description=DEEP_FLOW))
    (tmp_path / "paren100.yaml").write_text(_graph_yaml(when="(" * 100 + "1" + ")" * 100))
    (tmp_path / "agent_nest.yaml").write_text(
        f"schema_version: 1\nname: x\nmodel: echo\ninstructions: {DEEP_FLOW}\n"
    )
    for name, rule in [
        ("nest400.yaml", "yaml-too-deep"),
        ("paren100.yaml", "bad-condition"),
        ("agent_nest.yaml", "yaml-too-deep"),
    ]:
        done = _cli("validate", name, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
        assert f"{name}:" in done.stdout and f"[{rule}]" in done.stdout, done.stdout


# --------------------------------------------------------------------------- 7: secrets

SECRET = "sk-live-SUPERSECRET-<&\"'>-12345"


def _leaky_agent(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            schema_version: 1
            name: leak
            model: echo
            instructions: hi
            architecture:
              schema_version: 1
              name: inl
              description: "graph desc ${LEAKY_SECRET}"
              entry: a
              nodes:
                a: {kind: model, description: "node desc ${LEAKY_SECRET}"}
                b: {kind: llm, prompt: "tell ${LEAKY_SECRET} {{ input }}", output: output}
              edges:
                - {from: a, to: b, when: "input == '${LEAKY_SECRET_PLAIN}'"}
                - {from: a, to: END}
                - {from: b, to: END}
            """
        )
    )
    return path


def test_rendered_diagrams_of_an_agent_file_redact_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKY_SECRET", SECRET)
    monkeypatch.setenv("LEAKY_SECRET_PLAIN", "SUPERSECRETplain")
    loaded = load_agent_file(_leaky_agent(tmp_path))
    outputs = {"dot": to_dot(loaded.graph), "mmd": to_mermaid(loaded.graph)}
    if shutil.which("dot"):
        outputs["svg"] = to_svg(loaded.graph)
    for fmt, text in outputs.items():
        assert "SUPERSECRET" not in text, fmt
        assert "***" in text, fmt
    assert "SUPERSECRET" not in repr(loaded)
    written = render(loaded.graph, tmp_path / "out.mmd")
    assert "SUPERSECRET" not in written.read_text()


def test_cli_render_of_an_agent_file_redacts_secrets(tmp_path: Path) -> None:
    _leaky_agent(tmp_path)
    env = {"LEAKY_SECRET": SECRET, "LEAKY_SECRET_PLAIN": "SUPERSECRETplain"}
    suffixes = ["dot", "mmd", *(["svg"] if shutil.which("dot") else [])]
    for suffix in suffixes:
        done = _cli("render", "-a", "agent.yaml", "-o", f"out.{suffix}", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        text = (tmp_path / f"out.{suffix}").read_text()
        assert "SUPERSECRET" not in text, suffix
    bad = tmp_path / "agent.yaml"
    bad.write_text(bad.read_text().replace("'${LEAKY_SECRET_PLAIN}'", "'${LEAKY_SECRET}' and"))
    done = _cli("validate", "agent.yaml", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "SUPERSECRET" not in done.stdout + done.stderr


# --------------------------------------------------------------------------- 9: Mermaid


def _shape(text: str) -> list[str]:
    """Each line's first word: what kind of Mermaid statement it is."""
    return [line.split(" ", 5)[4] if line.startswith("    ") else line for line in text.split("\n")]


def _tiny(text: str) -> Graph:
    return Graph(
        name=text,
        version=text,
        description=text,
        entry="a",
        nodes={"a": NodeSpec(kind="model", description=text)},
        edges=[EdgeSpec(source="a", target="END", when=text), EdgeSpec(source="a", target="END")],
    )


def test_graph_names_with_line_breaks_are_refused_at_validation(tmp_path: Path) -> None:
    path = tmp_path / "mmd_inject.yaml"
    path.write_text(
        "schema_version: 1\n"
        'name: "looks_safe\\n    n_a -->|approved by security| __end__\\n    %%"\n'
        'version: "1\\n    click n_a href \\"javascript:alert(1)\\"\\n    %%"\n'
        "entry: a\nnodes:\n  a: {kind: model}\nedges:\n  - {from: a, to: END}\n"
    )
    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(path)
    assert caught.value.rules == {"bad-name"}
    assert sorted(p.line or 0 for p in caught.value.problems) == [2, 3]
    done = _cli("render", "mmd_inject.yaml", "-o", "x.mmd", cwd=tmp_path)
    assert done.returncode != 0 and not (tmp_path / "x.mmd").exists()


@pytest.mark.parametrize(
    "text",
    [
        "n\n    n_a -->|approved| __end__\n    %%",
        'n\r    click n_a href "javascript:alert(1)"',
        'n\u2028    click n_a href "javascript:alert(1)"',
        "n\x85    style n_a fill:#0f0",
        "n\x0b\x0c\x1c\x1d\x1e\u2029 click n_a call x()",
        "n %%{init: {'securityLevel': 'loose'}}%%",
    ],
    ids=["lf", "cr", "u2028", "nel", "vt-ff-fs-ps", "directive"],
)
def test_mermaid_output_of_an_unvalidated_graph_stays_a_comment(text: str) -> None:
    """Every text a Mermaid file carries (name, version, description, conditions) is one
    line of one statement: the file has the same statements as for a harmless name."""
    text_out, plain = to_mermaid(_tiny(text)), to_mermaid(_tiny("plain"))
    assert _shape(text_out) == _shape(plain)
    assert len(text_out.splitlines()) == len(plain.splitlines())
    assert "%%{" not in text_out and "}%%" not in text_out


def test_ordinary_names_draw_as_before() -> None:
    graph = Graph(
        name="py-built",
        description='A "quoted" <plan> & act loop',
        entry="a",
        nodes={"a": NodeSpec(kind="model")},
        edges=[
            EdgeSpec(source="a", target="END", when="visits.a % 2 == 1"),
            EdgeSpec(source="a", target="END"),
        ],
    )
    text = to_mermaid(graph)
    assert '%% py-built v1: A "quoted" <plan> & act loop' in text
    assert "#37;" in text  # `%` in a label is an entity, so no `%%{` directive can form


# --------------------------------------------------------------------------- low (a)

_ALLOC = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (600 * 2**20, 600 * 2**20))
from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
text = '''schema_version: 1
name: c
entry: a
nodes:
  a: {kind: model}
edges:
  - {from: a, to: END, when: "WHEN"}
  - {from: a, to: END}
'''
try:
    graph = graph_from_yaml(text.replace("WHEN", sys.argv[1]), file="c.yaml")
except GraphValidationError as err:
    print("LOAD", err.rules)
    raise SystemExit(0)
async def go():
    agent = Agent("x", model="echo", architecture=graph)
    result = await agent.run("hi")
    print("RUN", result.status, result.reason[:300])
asyncio.run(go())
"""


@pytest.mark.parametrize(
    "when",
    [
        "'x' * 500000000 > ''",
        "'a' * 3000000000 > ''",
        "input * 1000000000 > ''",
        "[1] * 1000000000 == []",
        "10 ** 1000000000 > 1",
        "'%1000000000s' % input > ''",
        "('%(a(b))1000000000s' % {'a(b)': input}) > ''",
        "(['x' * 1000000] * 1000) | join > ''",
    ],
    ids=[
        "str-500M",
        "str-3G",
        "input-1G",
        "list-1G",
        "pow",
        "percent-width",
        "percent-key-with-parentheses",
        "list-of-large-items",
    ],
)
def test_conditions_cannot_allocate_without_bound(tmp_path: Path, when: str) -> None:
    script = tmp_path / "alloc.py"
    script.write_text(_ALLOC)
    done = subprocess.run(
        [sys.executable, str(script), when], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RUN failed" in done.stdout, done.stdout
    assert "too large" in done.stdout, done.stdout


def test_small_products_still_work() -> None:
    assert compile_condition("'ab' * 3 == 'ababab'")() is True
    assert compile_condition("input * 2 == 'hihi'")(input="hi") is True
    assert compile_condition("2 ** 10 == 1024")() is True
    assert compile_condition("'%05d' % 42 == '00042'")() is True
    assert compile_condition("'%d%%' % 5 == '5%'")() is True
    assert compile_condition("'%(a(b))3s' % {'a(b)': 'x'} == '  x'")() is True
    assert compile_condition("(['ab', 'cd'] * 3) | length == 6")() is True
    assert compile_condition("visits.a % 2 == 1")(visits={"a": 3}) is True

"""The authoring probe's findings: templates using fields their node does not read, `on_error`
routes in diagrams, every problem of a file that fails its schema at once, and pydantic-model
defaults stored as a node's write would store them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from loomgraph import Agent, NodeKind, register_node
from loomgraph.authoring.agent_file import AgentFileError, load_agent_file
from loomgraph.authoring.diagram import ON_ERROR, TAKEN, TIMES, RunOverlay
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import builtin_dir, graph_from_yaml, load_graph_file
from loomgraph.authoring.render import to_dot, to_mermaid
from loomgraph.authoring.validate import validate_graph
from loomgraph.errors import GraphValidationError, Problem
from loomgraph.graph.compiled import compile_graph
from loomgraph.models import ScriptedModel
from loomgraph.runtime.memory import InMemoryRuntime


def problems_in(text: str, tmp_path: Path | None = None, name: str = "g.yaml") -> list[Problem]:
    """Every problem of a graph written to a file (in `tmp_path`) or given as text."""
    with pytest.raises(GraphValidationError) as caught:
        if tmp_path is None:
            graph_from_yaml(textwrap.dedent(text), file="inline.yaml")
        else:
            path = tmp_path / name
            path.write_text(textwrap.dedent(text), encoding="utf-8")
            load_graph_file(path)
    return caught.value.problems


def rules(problems: list[Problem]) -> list[tuple[str, int | None]]:
    return [(p.rule, p.line) for p in problems]


# --------------------------------------------------------------------------- 1: unread-field


def test_a_template_field_the_node_does_not_read_is_refused_naming_node_field_and_fix() -> None:
    (problem,) = problems_in("""\
        name: tpl
        state:
          topic: {type: str, default: "cats"}
        entry: ask
        nodes:
          ask:
            kind: llm
            prompt: "Write about {{ topic }} for {{ input }}"
            output: output
            reads: [input]
        edges:
          - {from: ask, to: END}
        """)
    assert (problem.rule, problem.line) == ("unread-field", 8)  # at the template
    assert "node 'ask'" in problem.message and "'topic'" in problem.message
    assert "add 'topic' to `reads:`" in problem.message


def test_a_subgraph_prompt_is_checked_against_its_reads() -> None:
    (problem,) = problems_in("""\
        name: subtpl
        state:
          topic: {type: str, default: "cats"}
        entry: s
        nodes:
          s: {kind: subgraph, graph: react, prompt: "Research {{ topic }}", reads: [input]}
        edges:
          - {from: s, to: END}
        """)
    assert (problem.rule, problem.line) == ("unread-field", 6)
    assert "node 's'" in problem.message and "add 'topic' to `reads:`" in problem.message


def test_state_dot_field_and_last_message_need_their_fields_read() -> None:
    problems = problems_in("""\
        name: g
        state:
          topic: {type: str, default: "cats"}
        entry: a
        nodes:
          a:
            kind: llm
            prompt: "{{ state.topic }} {{ state['input'] }} {{ last_message.content }}"
            output: output
            reads: [input]
        """)
    assert rules(problems) == [("unread-field", 8), ("unread-field", 8)]
    text = " ".join(p.message for p in problems)
    assert "'state.topic'" in text and "'last_message'" in text and "'messages'" in text
    assert "'input'" not in text.split("uses")[1].split(",")[0]  # input is read


def test_names_a_template_may_use_without_reading_them() -> None:
    # Loop and set variables, the kind's own names (`item` in a map), derived names whose
    # fields are read, and a kind that derives its reads from its templates.
    graph = graph_from_yaml(
        textwrap.dedent("""\
        name: g
        state:
          plan: {type: "list[str]", default: []}
          answers: {type: "list[str]", reducer: append, default: []}
          topic: {type: str, default: ""}
        entry: a
        nodes:
          a:
            kind: llm
            prompt: "{% for step in plan %}{{ step }}{% endfor %}{% set n = 2 %}{{ n }}"
            output: output
            reads: [plan]
          b:
            kind: map
            graph: react
            over: plan
            output: answers
            prompt: "{{ item }} about {{ topic }}"
            reads: [plan, topic]
          c: {kind: llm, prompt: "{{ topic }} {{ state.topic }} {{ last_message }}", output: output}
        edges:
          - {from: a, to: b}
          - {from: b, to: c}
        """),
        file="inline.yaml",
    )
    assert validate_graph(graph) == []


def test_every_built_in_graph_passes_every_rule() -> None:
    for path in sorted(builtin_dir().glob("*.yaml")):
        assert validate_graph(load_graph(str(path))) == [], path


class _LabelParams(BaseModel):
    field: str
    label: str = ""


@register_node("probe_labelled")
class _Labelled(NodeKind):
    """A kind whose template uses a field its default reads leave out."""

    Params = _LabelParams
    params: _LabelParams
    templates = ("label",)

    def reads(self) -> list[str]:
        return list(self.spec.reads) if self.spec.reads is not None else [self.params.field]

    async def run(self, state: Any, ctx: Any) -> dict[str, Any]:
        return {}


def test_a_kind_whose_reads_leave_out_its_template_fields_is_told_what_to_list() -> None:
    (problem,) = problems_in("""\
        name: g
        state:
          n: {type: int, default: 0}
        entry: b
        nodes:
          b: {kind: probe_labelled, field: n, label: "{{ input }}"}
        """)
    assert problem.rule == "unread-field"
    assert "`reads: [n, input]`" in problem.message


async def test_with_the_field_read_the_prompt_renders_it(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: tpl
        state:
          topic: {type: str, default: "cats"}
        entry: ask
        nodes:
          ask:
            kind: llm
            prompt: "Write about {{ topic }} for {{ input }}"
            output: output
            reads: [input, topic]
        edges:
          - {from: ask, to: END}
        """),
        encoding="utf-8",
    )
    seen: list[str] = []

    def answer(request: Any) -> str:
        seen.append(request.messages[-1]["content"])
        return "ok"

    result = await Agent("x", model=ScriptedModel(answer), architecture=str(path)).run("kids")
    assert result.status == "completed" and seen == ["Write about cats for kids"]


# --------------------------------------------------------------------------- 2: on_error routes

STEPS = """\
def work(state):
    return {"count": 1}
def fix(state):
    return {"count": 10}
def fail(state):
    raise ValueError("boom")
"""


def _graph_files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "probe_author_render_steps.py").write_text(STEPS, encoding="utf-8")
    g1 = tmp_path / "g1.yaml"
    g1.write_text(
        textwrap.dedent("""\
        name: g1
        state:
          count: {type: int, reducer: add, default: 0}
        entry: work
        nodes:
          work:
            {kind: function, call: "probe_author_render_steps:work", writes: [count], on_error: fix}
          fix: {kind: function, call: "probe_author_render_steps:fix", writes: [count]}
        edges:
          - {from: work, to: work, when: "count < 3"}
          - {from: work, to: fix, when: "count == 3"}
          - {from: work, to: END}
          - {from: fix, to: END}
        """),
        encoding="utf-8",
    )
    g2 = tmp_path / "g2.yaml"
    g2.write_text(
        textwrap.dedent("""\
        name: g2
        state:
          count: {type: int, reducer: add, default: 0}
        entry: work
        nodes:
          work:
            kind: function
            call: "probe_author_render_steps:fail"
            writes: [count]
            on_error: apologise
          apologise: {kind: function, call: "probe_author_render_steps:fix", writes: [count]}
        edges:
          - {from: work, to: END}
          - {from: apologise, to: END}
        """),
        encoding="utf-8",
    )
    return g1, g2


def mermaid_links(text: str) -> list[str]:
    """The link lines of a Mermaid flowchart, in the order Mermaid numbers them."""
    return [line.strip() for line in text.splitlines() if re.search(r" (-->|-\.->)", line)]


def link_style(text: str, index: int) -> str | None:
    match = re.search(rf"^\s*linkStyle {index} (.+)$", text, flags=re.M)
    return match.group(1) if match else None


def test_on_error_routes_are_drawn_as_their_own_kind_of_edge(tmp_path: Path) -> None:
    g1, _ = _graph_files(tmp_path)
    mermaid = to_mermaid(str(g1))
    links = mermaid_links(mermaid)
    route = links.index("n_work -.->|on_error| n_fix")
    assert link_style(mermaid, route) == f"stroke:{ON_ERROR},color:{ON_ERROR}"
    # The conditional edge between the same nodes is still drawn, apart from the route.
    assert "n_work -.->|#91;2#93; count == 3| n_fix" in links

    dot = to_dot(str(g1))
    (line,) = [line for line in dot.splitlines() if "on_error" in line and "->" in line]
    assert "style=dashed" in line and f'color="{ON_ERROR}"' in line
    assert "label=on_error " in line


async def test_a_run_that_took_the_route_highlights_it(tmp_path: Path) -> None:
    _, g2 = _graph_files(tmp_path)
    runtime = InMemoryRuntime()
    result = await Agent("x", model="echo", architecture=str(g2), runtime=runtime).run("hi")
    assert result.status == "completed"
    transitions = await runtime.transitions(result.run_id)
    overlay = RunOverlay.from_transitions(transitions, status="completed")
    assert overlay.on_error == [("work", "apologise")]

    mermaid = to_mermaid(str(g2), run=overlay)
    links = mermaid_links(mermaid)
    route = links.index(f"n_work -.->|on_error {TIMES}1| n_apologise")
    assert link_style(mermaid, route) == f"stroke:{TAKEN},stroke-width:3px"
    assert "n_work --> __end__" in links  # the edge not taken stays plain
    assert link_style(mermaid, links.index("n_work --> __end__")) is None

    dot = to_dot(str(g2), run=overlay)
    (line,) = [line for line in dot.splitlines() if "on_error" in line and "->" in line]
    assert f"{TIMES}1" in line and f'color="{TAKEN}"' in line and "style=dashed" in line
    assert "on_error route" in dot  # in the legend


def test_a_step_counts_on_the_route_or_the_edge_as_the_journal_says(tmp_path: Path) -> None:
    g1, _ = _graph_files(tmp_path)
    graph = load_graph(str(g1))
    by_route = RunOverlay(path=[("work", "fix"), ("fix", "END")], on_error=[("work", "fix")])
    edges, routes = by_route.taken_in(graph)
    assert routes == {("work", "fix"): 1} and ("work", "fix") not in edges
    by_edge = RunOverlay(path=[("work", "fix"), ("fix", "END")])
    edges, routes = by_edge.taken_in(graph)
    assert edges[("work", "fix")] == 1 and not routes
    # A bare path (a mapping given as `run=`): a step only the route joins is the route's.
    _, g2 = _graph_files(tmp_path)
    mermaid = to_mermaid(str(g2), run={"path": [("work", "apologise"), ("apologise", "END")]})
    assert f"n_work -.->|on_error {TIMES}1| n_apologise" in mermaid


def test_an_expanded_child_graph_draws_its_routes_with_the_right_link_numbers(
    tmp_path: Path,
) -> None:
    _graph_files(tmp_path)
    parent = tmp_path / "parent.yaml"
    parent.write_text(
        textwrap.dedent("""\
        name: parent
        entry: s
        nodes:
          s: {kind: subgraph, graph: g2.yaml, inputs: {}, outputs: {}}
          t: {kind: function, call: "probe_author_render_steps:work", writes: [], on_error: s}
        edges:
          - {from: s, to: t}
          - {from: t, to: END}
        """),
        encoding="utf-8",
    )
    mermaid = to_mermaid(str(parent), expand=True)
    links = mermaid_links(mermaid)
    child_route = links.index("c1_n_work -.->|on_error| c1_n_apologise")
    own_route = links.index("n_t -.->|on_error| n_s")
    for index in (child_route, own_route):
        assert link_style(mermaid, index) == f"stroke:{ON_ERROR},color:{ON_ERROR}"
    assert links[-1] == "n_s -.->|runs| c1_n_work"


# --------------------------------------------------------------------------- 3: all at once


def test_an_agent_file_reports_its_schema_and_other_problems_at_once(tmp_path: Path) -> None:
    (tmp_path / "probe_author_tools.py").write_text(
        'def search(q: str) -> str:\n    """Search."""\n    return q\n', encoding="utf-8"
    )
    path = tmp_path / "agent.yaml"
    path.write_text(
        textwrap.dedent("""\
        schema_version: 1
        name: bot
        instructons: You are a helpful assistant.
        model: gpt-9
        architecture: react
        tools:
          - probe_author_tools:serch
          - {mcp: http, url: "http://tools.example"}
          - probe_author_tools:serch
        memory: bogus
        """),
        encoding="utf-8",
    )
    with pytest.raises(AgentFileError) as caught:
        load_agent_file(path)
    found = [(p.rule, p.line) for p in caught.value.problems]
    assert ("unknown-key", 3) in found and ("model", 4) in found
    # Each tool at its own line, the one that failed the schema left out alone.
    assert ("import", 7) in found and ("import", 9) in found and ("schema", 8) in found
    assert ("backend", 10) in found
    assert [line for _, line in found] == sorted(line or 0 for _, line in found)


def test_a_graph_file_reports_its_schema_and_other_problems_at_once() -> None:
    problems = problems_in("""\
        schema_version: 1
        name: multi
        version: "1"
        entrypoint: model
        entry: model
        nodes:
          model: {kind: model}
          tools: {kind: toolz}
        edges:
          - {from: model, to: tols, when: "len(x) > 0"}
          - {from: model, to: END}
        """)
    assert rules(problems) == [
        ("schema", 4),
        ("unknown-node-kind", 8),
        ("unreachable-node", 8),
        ("bad-condition", 10),
        ("unknown-endpoint", 10),
    ]


def test_rules_that_read_a_part_that_failed_are_not_reported() -> None:
    problems = problems_in("""\
        name: m2
        state:
          x: str
          y: {type: "lisst[int]"}
        entry: model
        nodes:
          model: {kind: model}
          broken:
          other: {kind: llm, prompt: "{{ nope }}", output: out}
        edges:
          - {from: model, to: broken}
          - {from: model, to: other, when: 1}
          - {from: model, to: other, when: "len(y)"}
          - {from: other, to: END}
          - {from: model, to: ENDD}
        """)
    assert rules(problems) == [
        ("schema", 3),  # state.x: kept as `any`, so `x` is still a field
        ("bad-type", 4),
        ("schema", 8),  # node 'broken': left out, with the edge to it
        ("undeclared-write", 9),
        ("schema", 12),  # an edge: left out, the edges after it at their own lines
        ("bad-condition", 13),
        ("unknown-endpoint", 15),
    ]
    # Not reported: `nope` (undefined-read: 'broken' might have written it), and the flow
    # rules (an edge and a node were left out).


def test_a_node_with_one_field_failing_is_still_a_node_for_the_other_rules() -> None:
    # Only the field that failed is left out: the node keeps its name (so the entry's typo
    # gets its "did you mean", and its edges are kept) and its other keys are checked (a
    # misspelt param). Before, the whole node was left out, and the report pointed at the
    # wrong fix: "nodes: 'act'".
    problems = problems_in("""\
        name: g
        entry: plannr
        nodes:
          planner: {kind: model, timeout: -5, tool: search}
          act: {kind: tools, timeout: 0, retry: {max_attempts: x}}
        edges:
          - {from: planner, to: act}
          - {from: act, to: END}
          - {from: act, to: plannerr}
        """)
    assert rules(problems) == [
        ("unknown-entry", 2),
        ("schema", 4),
        ("bad-params", 4),
        ("schema", 5),
        ("schema", 5),
        ("unknown-endpoint", 9),
        ("shadowed-edge", 9),  # its edges are kept: the one after `act -> END` never runs
    ]
    entry = next(p for p in problems if p.rule == "unknown-entry")
    assert "did you mean 'planner'?" in entry.message, entry.message
    param = next(p for p in problems if p.rule == "bad-params")
    assert "'tool'" in param.message and "'tools'" in param.message, param.message
    endpoint = next(p for p in problems if p.rule == "unknown-endpoint")
    assert "did you mean 'planner'?" in endpoint.message, endpoint.message


def test_a_misspelt_entry_key_does_not_also_report_the_entry_missing() -> None:
    problems = problems_in("""\
        name: g
        entrypoint: model
        nodes:
          model: {kind: modle}
        """)
    assert rules(problems) == [("schema", 2), ("unknown-node-kind", 4)]


# --------------------------------------------------------------------------- 4: model defaults

TYPES = """\
from pydantic import BaseModel, Field
class Critique(BaseModel):
    score: float = Field(ge=0, le=1)
    notes: str = ""
"""

GD = """\
name: gd
state:
  critique: {type: "probe_author_critique_types:Critique", default: {score: 0.5}}
entry: a
nodes:
  a: {kind: llm, prompt: "notes=[{{ critique.notes }}] score={{ critique.score }}", output: output}
  b: {kind: llm, prompt: "B", output: output}
edges:
  - {from: a, to: b, when: "critique.notes == ''"}
  - {from: a, to: END}
  - {from: b, to: END}
"""


def _critique_graph(tmp_path: Path) -> Path:
    (tmp_path / "probe_author_critique_types.py").write_text(TYPES, encoding="utf-8")
    path = tmp_path / "gd.yaml"
    path.write_text(GD, encoding="utf-8")
    return path


def test_a_model_default_is_stored_as_a_write_would_store_it(tmp_path: Path) -> None:
    schema = compile_graph(load_graph(str(_critique_graph(tmp_path)))).schema
    assert schema.defaults["critique"] == {"score": 0.5, "notes": ""}
    assert schema.initial()["critique"] == schema.check({"critique": {"score": 0.5}})["critique"]
    first, second = schema.initial(), schema.initial()
    first["critique"]["notes"] = "changed"
    assert second["critique"]["notes"] == ""  # each run gets its own copy


def test_the_default_is_made_once_not_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = compile_graph(load_graph(str(_critique_graph(tmp_path)))).schema

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a default is validated when the schema is built, not per run")

    monkeypatch.setattr(schema.adapters["critique"], "validate_python", refuse)
    assert schema.initial()["critique"] == {"score": 0.5, "notes": ""}


async def test_a_run_reads_the_model_defaults_fields(tmp_path: Path) -> None:
    seen: list[str] = []

    def answer(request: Any) -> str:
        seen.append(request.messages[-1]["content"])
        return "ok"

    agent = Agent("x", model=ScriptedModel(answer), architecture=str(_critique_graph(tmp_path)))
    result = await agent.run("q")
    assert result.status == "completed"
    assert seen == ["notes=[] score=0.5", "B"]  # `critique.notes == ''` held: a -> b

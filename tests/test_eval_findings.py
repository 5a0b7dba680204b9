"""Findings about the evaluation harness (docs/eval.md, `loomgraph eval`), each fixed:

- user text (a dataset's name, a strategy's file) is printed as written in the terminal
  table and the comparison lines, never read as Rich markup; a crash while printing is
  still no verdict (exit 2);
- `eval --json` prints the report with the command's JSON writer (`output.json_line`);
- a key given twice in a JSON Lines case, or in a `.json` dataset, is refused at its line;
- a `.json` dataset is read as JSON (tabs, `1e3`), with its problems at their lines;
- an answer `json_schema` whose `$ref` leads nowhere, or loops, is refused when the dataset
  loads;
- a case's `session` (and the dataset's `name`) that no journal can store (a NUL) is refused
  when the dataset loads;
- a kept run that had not ended for good (waiting for an approval) is read again from its
  journal and scored as it ended; one still waiting is kept as it is;
- the agent's budget caps are in the fingerprint that decides whether a kept run is reused;
- a bad `--run-max-tokens`/`--run-max-cost` is a usage error before the `--out` folder is
  made, and a crash before any run does not claim runs were kept in a state file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.cli.main import main
from loomgraph.cli.output import json_line
from loomgraph.eval import Dataset, evaluate
from loomgraph.eval.dataset import DatasetError
from loomgraph.eval.report import Report
from loomgraph.models.scripted import ScriptedModel
from loomgraph.runtime import SqliteRuntime

REPO = Path(__file__).resolve().parents[1]

AGENTS = """
from loomgraph import Agent
from loomgraph.models.scripted import ScriptedModel


def _answer(request):
    return {"text": "ANSWER: " + str(request.messages[-1]["content"])}


def make_agent(architecture="react", **options):
    return Agent("x", model=ScriptedModel(_answer), architecture=architecture, **options)


def crashing_agent(architecture="react", **options):
    raise ValueError("the factory needs an API key")
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with an agents module of its own name (modules are cached by name)."""
    module = f"agents_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(AGENTS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _eval(work: Path, dataset: str, *args: str, agent: str = "make_agent") -> int:
    module = next(p.stem for p in work.glob("agents_*.py"))
    return main(["eval", dataset, "-a", f"{module}:{agent}", "--out", "out", *args])


def _one_case_dataset(work: Path, name: str) -> str:
    text = (
        f"schema_version: 1\nname: {json.dumps(name)}\ncases:\n"
        "  - {id: a, input: hello, expect: {answer: {contains: ANSWER}}}\n"
    )
    (work / "d.yaml").write_text(text)
    return "d.yaml"


# ------------------------------------------------------------------ the terminal table


def test_a_dataset_name_with_brackets_is_the_tables_title_and_the_gate_holds(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _one_case_dataset(work, "release [/] notes")
    code = _eval(work, dataset, "--fail-under", "0.5")
    out = capsys.readouterr().out
    assert code == 0
    assert "release [/] notes" in out


def test_a_strategy_file_with_brackets_is_named_as_written(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "loops").mkdir()
    shutil.copy(REPO / "graphs" / "react.yaml", work / "loops" / "react[v2].yaml")
    dataset = _one_case_dataset(work, "brackets")
    code = _eval(work, dataset, "--architecture", "react", "--architecture", "loops/react[v2].yaml")
    out = capsys.readouterr().out
    assert code == 0
    assert "loops/react[v2].yaml - react:" in out  # the comparison line
    assert "loops/react.yaml" not in out


def test_a_crash_while_printing_the_table_is_no_verdict(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loomgraph.cli import evaluate as cli_evaluate

    def broken(report: Any) -> None:
        raise RuntimeError("the terminal broke")

    monkeypatch.setattr(cli_evaluate, "_print_table", broken)
    code = _eval(work, _one_case_dataset(work, "d"), "--fail-under", "0.5")
    assert code == 2  # never 1, which a failed gate gives
    assert "the terminal broke" in capsys.readouterr().err


def test_eval_json_prints_the_report_with_the_commands_json_writer(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval(work, _one_case_dataset(work, "Zürich [x]"), "--json") == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert out == json_line(printed) + "\n"  # one line, as the writer writes it
    report = Report.read_json(work / "out" / "report.json").to_dict()
    assert printed == report and list(printed) == list(report)  # in the report's own order


# ------------------------------------------------------------------ dataset files


def test_a_key_given_twice_in_a_json_lines_case_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(
        '{"id": "ok", "input": "x"}\n'
        '{"id": "weather", "input": "x", "expect": {"answer": {"contains": "sunny"}}, '
        '"id": "other", "expect": {}}\n'
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    assert "twice" in str(caught.value) and ":2:" in str(caught.value)
    found = [(p.rule, p.line, p.message.split(" appears")[0]) for p in caught.value.problems]
    assert found == [("duplicate-name", 2, "key 'id'"), ("duplicate-name", 2, "key 'expect'")]


def test_a_json_dataset_indented_with_tabs_loads(tmp_path: Path) -> None:
    data = {
        "schema_version": 1,
        "name": "tabs",
        "cases": [{"id": "a", "input": "hello", "expect": {"answer": {"contains": "hi"}}}],
    }
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(data, indent="\t"))
    dataset = Dataset.load(path)
    assert [case.id for case in dataset.cases] == ["a"]


def test_a_json_dataset_reads_numbers_as_json_does(tmp_path: Path) -> None:
    path = tmp_path / "cases.json"
    path.write_text('{"cases": [{"id": "a", "input": "x", "metadata": {"n": 1e3}}]}')
    [case] = Dataset.load(path).cases
    assert case.metadata["n"] == 1000.0 and isinstance(case.metadata["n"], float)


def test_a_json_datasets_problems_are_at_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "cases.json"
    path.write_text(
        "{\n"
        '  "cases": [\n'
        '    {"id": "a", "input": "x"},\n'
        "    {\n"
        '      "id": "b",\n'
        '      "input": "y",\n'
        '      "expect": {"max_tokens": -1},\n'
        '      "colour": "red"\n'
        "    }\n"
        "  ],\n"
        '  "name": "one",\n'
        '  "name": "two"\n'
        "}\n"
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    lines = {(p.rule, p.line) for p in caught.value.problems}
    assert ("duplicate-name", 12) in lines
    found = {p.line for p in caught.value.problems if p.rule == "schema"}
    assert found == {7, 8}  # max_tokens at its key, the unknown key at its own line


def test_a_json_syntax_error_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cases.json"
    path.write_text('{\n  "cases": [\n    {"id": "a", "input": "x",}\n  ]\n}\n')
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    assert problem.rule == "json-syntax" and problem.line == 3


def test_a_json_dataset_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cases.json"
    deep = "[" * 100 + "]" * 100
    path.write_text('{"cases": [{"id": "a", "input": "x", "metadata": {"x": ' + deep + "}}]}")
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    assert [p.rule for p in caught.value.problems] == ["json-too-deep"]


def test_a_json_schema_with_a_dangling_ref_is_refused_when_the_dataset_loads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(
        "schema_version: 1\ncases:\n  - id: a\n    input: hello\n    expect:\n"
        '      answer: {json_schema: {$ref: "#/$defs/Missing"}}\n'
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    assert "json_schema" in str(problem) and "Missing" in str(problem)
    assert problem.rule == "answer-check" and problem.line == 6


@pytest.mark.parametrize(
    "schema",
    [
        '{$ref: "https://example.com/schema.json"}',  # never fetched: it leads nowhere
        '{$ref: "#/$defs/a", $defs: {a: {$ref: "#/$defs/a"}}}',  # a loop
    ],
)
def test_a_json_schema_whose_refs_cannot_be_followed_is_refused(
    tmp_path: Path, schema: str
) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(
        "cases:\n  - id: a\n    input: hello\n    expect:\n"
        f"      answer: {{json_schema: {schema}}}\n"
    )
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    assert problem.rule == "answer-check" and "$ref" in problem.message


def test_a_json_schema_whose_refs_resolve_loads(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(
        "cases:\n  - id: a\n    input: hello\n    expect:\n"
        "      answer:\n        json_schema:\n"
        '          {$ref: "#/$defs/n", $defs: {n: {type: object, properties: '
        '{next: {$ref: "#/$defs/n"}}}}}\n'
    )
    assert Dataset.load(path).cases[0].expect.answer is not None


def test_a_session_with_a_nul_is_refused_when_the_dataset_loads(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text('cases:\n  - id: a\n    input: hello\n    session: "s\\0x"\n')
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    assert "session" in problem.message and "NUL" in problem.message and problem.line == 4


def test_a_dataset_name_with_a_nul_is_refused_when_the_dataset_loads(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text('{"id": "a", "input": "hello"}\n')
    Dataset.load(path)  # named by the file: fine
    yaml_path = tmp_path / "cases.yaml"
    yaml_path.write_text('name: "d\\0"\ncases:\n  - {id: a, input: hello}\n')
    with pytest.raises(DatasetError) as caught:
        Dataset.load(yaml_path)
    [problem] = caught.value.problems
    assert "name" in problem.message and "NUL" in problem.message and problem.line == 1


# ------------------------------------------------------------------ kept runs


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    return f"paid {amount} to {to}"


def _pays(request: Any) -> dict[str, Any]:
    if request.call_index == 0:
        return {"tool_calls": [{"tool": "pay", "args": {"to": "acme", "amount": 5}}]}
    return {"text": "paid acme"}


PAY_DATASET = {
    "name": "d",
    "cases": [{"id": "c1", "input": "pay acme 5", "expect": {"answer": {"contains": "paid"}}}],
}


async def test_a_run_approved_after_the_evaluation_is_scored_as_it_ended(tmp_path: Path) -> None:
    dataset = Dataset.model_validate(PAY_DATASET)
    state, db = tmp_path / "state.jsonl", str(tmp_path / "eval.db")

    def agent() -> Agent:
        return Agent("x", model=ScriptedModel(_pays), tools=[pay], runtime=SqliteRuntime(db))

    first = agent()
    try:
        report = await evaluate(dataset, {"s": first}, state_file=state)
        run = report.runs[0]["outcome"]
        assert run["status"] == "awaiting_approval"
        resumed = await first.resume(run["run_id"], approve=True)
        assert str(resumed.status) == "completed"
    finally:
        await first.aclose()
    second = agent()
    try:
        again = await evaluate(dataset, {"s": second}, state_file=state)
    finally:
        await second.aclose()
    assert again.runs[0]["outcome"]["status"] == "completed"
    assert again.runs[0]["outcome"]["run_id"] == run["run_id"]  # read again, not run again
    assert [c["tool"] for c in again.runs[0]["outcome"]["calls"]] == ["pay"]
    assert again.runs[0]["passed"] and again.summary("s").score == 1.0


async def test_a_run_still_waiting_is_kept_as_it_is(tmp_path: Path) -> None:
    dataset = Dataset.model_validate(PAY_DATASET)
    state, db = tmp_path / "state.jsonl", str(tmp_path / "eval.db")
    for _ in range(2):
        agent = Agent("x", model=ScriptedModel(_pays), tools=[pay], runtime=SqliteRuntime(db))
        try:
            report = await evaluate(dataset, {"s": agent}, state_file=state)
        finally:
            await agent.aclose()
        assert report.runs[0]["outcome"]["status"] == "awaiting_approval"
    kinds = [json.loads(line)["kind"] for line in state.read_text().splitlines()]
    assert kinds == ["started", "finished"]  # read again, unchanged: nothing rewritten


def test_raising_the_per_run_token_cap_runs_the_budget_stopped_cases_again(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _one_case_dataset(work, "caps")
    _eval(work, dataset, "--run-max-tokens", "1", "--json")
    first = json.loads((work / "out" / "report.json").read_text())
    assert first["runs"][0]["outcome"]["status"] == "budget_exhausted"
    code = _eval(work, dataset, "--run-max-tokens", "100000", "--json")
    capsys.readouterr()
    again = json.loads((work / "out" / "report.json").read_text())
    assert code == 0
    assert again["runs"][0]["outcome"]["status"] == "completed", again["runs"][0]["outcome"]
    # The same caps again: the kept run is reused, not run a third time.
    assert _eval(work, dataset, "--run-max-tokens", "100000", "--json") == 0
    state = (work / "out" / "state.jsonl").read_text()
    assert state.count('"started"') == 2


# ------------------------------------------------------------------ usage errors, crashes


@pytest.mark.parametrize(
    ("option", "value"), [("--run-max-tokens", "-1"), ("--run-max-cost", "nan")]
)
def test_a_bad_cap_is_a_usage_error_before_the_out_folder_is_made(
    work: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    dataset = _one_case_dataset(work, "d")
    assert _eval(work, dataset, option, value) == 2
    err = capsys.readouterr().err
    assert option in err and "state.jsonl" not in err
    assert not (work / "out").exists()


def test_a_crash_before_any_run_does_not_claim_runs_were_kept(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _one_case_dataset(work, "d")
    assert _eval(work, dataset, agent="crashing_agent") == 2
    err = capsys.readouterr().err
    assert "the factory needs an API key" in err
    assert "kept in" not in err and "state.jsonl" not in err


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_json_dataset_refuses_numbers_json_has_not(
    tmp_path: Path, suffix: str, constant: str
) -> None:
    """Python's JSON reader takes `NaN` and `Infinity`; JSON has neither, and an expected
    `NaN` compares unequal to everything. Refused, naming the constant."""
    case = '{"id": "a", "input": "x", "metadata": {"n": ' + constant + "}}"
    path = tmp_path / f"cases{suffix}"
    path.write_text('{"cases": [' + case + "]}" if suffix == ".json" else case + "\n")
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    assert problem.rule == "json-syntax" and constant.lstrip("-") in problem.message


def test_a_trajectory_tells_true_from_1_but_not_1_from_1_0() -> None:
    """An expected `{"confirm": true}` matched a call sent with `"confirm": 1` (Python's
    `True == 1`); numbers still match by value (`100` fits `100.0`)."""
    from loomgraph.eval.dataset import ToolTrajectory
    from loomgraph.eval.trajectory import CallRecord, match_trajectory

    spec = ToolTrajectory.model_validate(
        {"mode": "in_order", "calls": [{"tool": "pay", "args": {"confirm": True, "amount": 100.0}}]}
    )
    assert not match_trajectory(spec, [CallRecord("pay", {"confirm": 1, "amount": 100.0})]).passed
    assert match_trajectory(spec, [CallRecord("pay", {"confirm": True, "amount": 100})]).passed

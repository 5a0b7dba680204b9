"""`loomgraph eval` as CI uses it: gates, a baseline, evaluator failures and exit codes
(0 the gates held, 1 a gate failed, 2 no verdict: bad usage or input, or a crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loomgraph.cli.main import main

AGENTS = """
from loomgraph import Agent
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelError


def _answer(request):
    return {"text": "ANSWER: " + str(request.messages[-1]["content"])}


def _down(request):
    raise ModelError("provider down")


def make_agent(architecture="react", **options):
    return Agent("x", model=ScriptedModel(_answer), architecture=architecture, **options)


def broken_agent(architecture="react", **options):
    return Agent("x", model=ScriptedModel(_down), architecture=architecture, **options)


def crashing_agent(architecture="react", **options):
    raise RuntimeError("the factory broke")


def raising(case, outcome):
    raise RuntimeError("evaluator bug")


def over_one(case, outcome):
    return 1.5
"""

TWO = (
    "name: two\ncases:\n"
    "  - {id: a, input: hello, expect: {answer: {contains: ANSWER}, not_called: [cancel_*]}}\n"
    "  - {id: b, input: hello2, expect: {answer: {contains: ANSWER}}}\n"
)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with an agents module of its own name (modules are cached by name)."""
    module = f"agents_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(AGENTS)
    (tmp_path / "two.yaml").write_text(TWO)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _eval(
    work: Path, *args: str, dataset: str = "two.yaml", agent: str = "make_agent", out: str = "out"
) -> int:
    module = next(p.stem for p in work.glob("agents_*.py"))
    return main(["eval", dataset, "-a", f"{module}:{agent}", "--out", str(work / out), *args])


def _runs_started(work: Path) -> int:
    state = work / "out" / "state.jsonl"
    return state.read_text().count('"started"') if state.exists() else 0


def test_every_run_failed_fails_the_gate(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(work, "--fail-under", "0.9", agent="broken_agent") == 1
    err = capsys.readouterr().err
    assert "gate: default: score 0.000 is under 0.900" in err
    assert "2 of 2 run(s) did not complete" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--fail-under", "nan"],
        ["--fail-under", "inf"],
        ["--fail-under", "80"],
        ["--fail-under", "-0.1"],
        ["--max-drop", "nan"],
        ["--max-drop", "-1"],
    ],
)
def test_gate_values_that_would_not_gate_are_usage_errors(
    work: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert _eval(work, *args) == 2
    assert args[0] in capsys.readouterr().err
    assert _runs_started(work) == 0  # refused before any run


def test_a_missing_baseline_is_refused_before_any_run(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = work / "nowhere" / "report.json"
    assert _eval(work, "--baseline", str(missing)) == 2
    assert str(missing) in capsys.readouterr().err
    assert _runs_started(work) == 0


@pytest.mark.parametrize(
    "content",
    [
        '{"dataset": "x"}',
        "not json",
        "[]",
        '{"dataset": "x", "strategies": [{"strategy": "default", "score": "high"}]}',
        '{"dataset": "x", "strategies": [{"strategy": "default", "score": 0.5,'
        ' "evaluators": {"answer": NaN}}]}',
    ],
)
def test_a_malformed_baseline_is_a_usage_error_naming_the_file(
    work: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    bad = work / "bad.json"
    bad.write_text(content)
    assert _eval(work, "--baseline", str(bad)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert _runs_started(work) == 0


def test_a_baseline_from_an_earlier_evaluation_gates(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval(work) == 0
    report = json.loads((work / "out" / "report.json").read_text())
    report["strategies"][0]["score"] = 1.0
    report["strategies"][0]["evaluators"]["answer"] = 1.0
    (work / "base.json").write_text(json.dumps(report))
    (work / "two.yaml").write_text(TWO.replace("contains: ANSWER}", "contains: nope}", 1))
    again = _eval(work, "--baseline", str(work / "base.json"), "--max-drop", "0.1", out="o2")
    assert again == 1
    assert "answer score dropped from 1.000 to 0.500" in capsys.readouterr().err


@pytest.mark.parametrize("call", ["raising", "over_one"])
def test_an_evaluator_that_fails_is_reported_and_the_evaluation_goes_on(
    work: Path, capsys: pytest.CaptureFixture[str], call: str
) -> None:
    module = next(p.stem for p in work.glob("agents_*.py"))
    (work / "custom.yaml").write_text(
        TWO.replace("cases:", f"evaluators: [{{kind: custom, call: '{module}:{call}'}}]\ncases:")
    )
    assert _eval(work, dataset="custom.yaml") == 0
    captured = capsys.readouterr()
    assert "2 evaluator error(s)" in captured.err
    report = json.loads((work / "out" / "report.json").read_text())
    scores = [s for run in report["runs"] for s in run["scores"] if s["evaluator"] == call]
    assert len(scores) == 2 and all(s["error"] and not s["passed"] for s in scores)
    assert (work / "out" / "report.html").exists()
    assert _eval(work, "--fail-under", "0.9", dataset="custom.yaml") == 1


def test_a_crash_is_not_a_failed_gate(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(work, agent="crashing_agent") == 2
    err = capsys.readouterr().err
    assert "RuntimeError: the factory broke" in err


def test_a_dataset_that_would_fail_at_scoring_is_refused_before_any_run(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "bad.yaml").write_text(
        "cases:\n  - id: a\n    input: x\n    expect: {answer: {regex: '([a-'}}\n"
    )
    assert _eval(work, dataset="bad.yaml") == 2
    assert "bad.yaml:4" in capsys.readouterr().err
    assert _runs_started(work) == 0


def test_a_strategy_missing_from_the_baseline_is_no_verdict_before_any_run(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval(work, out="base") == 0  # a baseline holding the strategy `default` only
    capsys.readouterr()
    baseline = str(work / "base" / "report.json")
    code = _eval(
        work, "--baseline", baseline, "--architecture", "default", "--architecture", "react"
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"no baseline for strategy 'react' in {baseline}" in err
    assert "'default'" not in err.split("no baseline")[1].split("(")[0]  # only `react` named
    assert _runs_started(work) == 0  # refused before any run: no model call spent
    assert _eval(work, "--baseline", baseline, "--architecture", "default") == 0


def test_the_gate_function_refuses_a_baseline_without_the_strategy(work: Path) -> None:
    from loomgraph.eval.report import Report, gate

    assert _eval(work) == 0
    report = Report.read_json(work / "out" / "report.json")
    other = Report.read_json(work / "out" / "report.json")
    other.strategies[0].strategy = "elsewhere"
    with pytest.raises(ValueError, match="no baseline for strategy 'default'"):
        gate(report, baseline=other)

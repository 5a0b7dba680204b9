"""Gates that must not pass on silence: a judge that gave no score, an evaluator gone from
the report, an evaluation of no strategies or of a strategy without runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.cli.main import main
from loomgraph.eval import Dataset, Evaluation, Report, build_report, evaluate, gate
from loomgraph.models.scripted import ScriptedModel


def _judge(score: float, tokens: int = 50) -> ScriptedModel:
    """A judge model that always gives `score`, reporting `tokens` input tokens."""
    reply = {"text": f'{{"score": {score}, "reason": "graded"}}'}
    return ScriptedModel(lambda r: {**reply, "usage": {"input_tokens": tokens, "output_tokens": 5}})


def _hi() -> Agent:
    return Agent("x", model=ScriptedModel(lambda r: "hi"))


def _two_cases(**extra: Any) -> Dataset:
    cases = [{"id": c, "input": c, "expect": {"answer": {"contains": "hi"}}} for c in ("a", "b")]
    return Dataset.model_validate({"name": "d", "cases": cases, **extra})


RUBRIC = "Is {{ answer }} good?"


async def test_a_judge_that_gave_no_score_does_not_pass_the_regression_gate() -> None:
    """Baseline: the judge scored every run 0.2. Now its cap leaves no room: each run gets a
    failing `skipped` judge score (not no score), so the score drops and the gate fails."""
    before = await evaluate(
        _two_cases(evaluators=[{"kind": "judge", "rubric": RUBRIC}]),
        {"s": _hi()},
        judge_model=_judge(0.2),
    )
    assert before.summary("s").evaluators["judge"] == pytest.approx(0.2)
    capped = [{"kind": "judge", "rubric": RUBRIC, "max_tokens": 20}]
    after = await evaluate(_two_cases(evaluators=capped), {"s": _hi()}, judge_model=_judge(0.2))
    summary = after.summary("s")
    assert summary.evaluators["judge"] == 0.0 and summary.pass_rate == 0.0
    assert summary.score == pytest.approx(0.5)  # answer 1, judge 0: not the 1.0 of silence
    judged = [s for run in after.runs for s in run["scores"] if s["evaluator"] == "judge"]
    assert [s["skipped"] for s in judged] == [True, True]
    assert all(not s["passed"] and "max_tokens" in s["reason"] for s in judged)
    assert after.judge_usage["judge"]["skipped"] == 2
    failures = gate(after, baseline=before, max_drop=0.02)
    assert any(
        "judge score dropped from 0.200 to 0.000" in f and "2 skipped" in f for f in failures
    )
    assert any("s: score dropped" in f for f in failures)


async def test_a_skipped_judge_score_is_scored_again_on_the_next_run(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    capped = [{"kind": "judge", "rubric": RUBRIC, "max_tokens": 100}]  # room for one call
    first = await evaluate(
        _two_cases(evaluators=capped), {"s": _hi()}, judge_model=_judge(0.9), state_file=state
    )
    assert first.judge_usage["judge"]["skipped"] == 1
    again = await evaluate(
        _two_cases(evaluators=capped), {"s": _hi()}, judge_model=_judge(0.9), state_file=state
    )
    assert again.judge_usage["judge"]["skipped"] == 0
    assert again.summary("s").evaluators["judge"] == pytest.approx(0.9)


async def test_an_evaluator_of_the_baseline_that_gave_no_score_now_fails_the_gate() -> None:
    before = await evaluate(
        _two_cases(evaluators=[{"kind": "judge", "rubric": RUBRIC}]),
        {"s": _hi()},
        judge_model=_judge(0.9),
    )
    now = await evaluate(_two_cases(), {"s": _hi()})  # the judge is gone
    assert now.summary("s").score == 1.0 > before.summary("s").score
    failures = gate(now, baseline=before, max_drop=0.5)
    assert failures == [
        "s: judge gave no score now (the baseline has 0.900); gate against a "
        "baseline without it to drop it"
    ]


async def test_an_evaluation_of_no_strategies_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one strategy"):
        await evaluate(_two_cases(), {})
    with pytest.raises(ValueError, match="at least one strategy"):
        Evaluation(_two_cases(), {}, [])


def test_a_report_with_no_strategy_or_a_strategy_without_runs_gives_no_verdict() -> None:
    with pytest.raises(ValueError, match="no strategy"):
        gate(build_report("d", [], []), fail_under=0.9)
    with pytest.raises(ValueError, match="'s' has no run"):
        gate(build_report("d", ["s"], []), fail_under=0.9)
    empty = Report.from_dict(build_report("d", ["s"], []).to_dict())
    with pytest.raises(ValueError, match="has no run"):
        gate(empty, baseline=empty)


AGENT = """
from loomgraph import Agent
from loomgraph.models.scripted import ScriptedModel


def make_agent(architecture="react", **options):
    return Agent("x", model=ScriptedModel(lambda r: "hi"), architecture=architecture, **options)


def judge(request):
    return '{"score": 0.9, "reason": "fine"}'
"""

CAPPED = """name: capped
evaluators:
  - {kind: judge, rubric: "Is {{ answer }} good?", model: "%s", max_tokens: 10}
cases:
  - {id: a, input: hello, expect: {answer: {contains: hi}}}
"""


def test_the_command_says_how_many_judge_scores_were_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = f"agents_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(AGENT)
    (tmp_path / "capped.yaml").write_text(CAPPED % "echo")
    monkeypatch.chdir(tmp_path)
    code = main(["eval", "capped.yaml", "-a", f"{module}:make_agent", "--fail-under", "0.9"])
    err = capsys.readouterr().err
    assert "1 judge score(s) skipped" in err and "the next run scores them again" in err
    assert code == 1 and "gate: default: score 0.500 is under 0.900" in err


def test_a_dataset_named_with_a_path_writes_its_reports_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    module = f"agents_{tmp_path.name.replace('-', '_')}"
    (work / f"{module}.py").write_text(AGENT)
    (work / "d.yaml").write_text("name: ../outside\ncases:\n  - {id: a, input: hello}\n")
    monkeypatch.chdir(work)
    assert main(["eval", "d.yaml", "-a", f"{module}:make_agent", "--json"]) == 0
    assert (work / "eval-outside" / "report.json").exists()
    assert not (tmp_path / "outside").exists()

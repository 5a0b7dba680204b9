"""Findings of a probe of `loomgraph eval` and the evaluation API (docs/eval.md), fixed.

Covers: a judge reply read for the first JSON object with a usable `score` (a greedy regex
spanned from the first `{` to the last, so braces around the verdict gave a failing 0); a
Score detail that is NaN or infinite refused as an evaluator error (it was written as the
bare token `NaN`, so report.json and state.jsonl were not JSON); scores kept per evaluator
(one fingerprint covered all evaluators, so adding a cheap check, or an evaluator error,
made the paid judge score every run again); `--run-max-tokens`/`--run-max-cost` added to
the agent's own budget (they replaced it, dropping its global caps and its prices).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.cli.main import main
from loomgraph.eval import CaseOutcome, CustomEvaluator, Dataset, JudgeEvaluator, Score, evaluate
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest


def _case_and_outcome(answer: str = "hello") -> tuple[object, CaseOutcome]:
    dataset = Dataset.model_validate({"name": "d", "cases": [{"id": "a", "input": "hi"}]})
    return dataset.cases[0], CaseOutcome("a", "s", 0, "r", "completed", answer)


def test_a_judge_reply_holding_the_score_object_and_other_braces_is_scored() -> None:
    """A judge model thinks aloud before its verdict (`I checked {answer} ... {"score": 0.9,
    "reason": "good"}`), or adds a note with braces after it: the reply holds the score
    object, so it scores 0.9 (a greedy `\\{.*\\}` read no JSON there: a failing 0)."""
    case, outcome = _case_and_outcome()
    for reply in (
        'I checked {answer} carefully. {"score": 0.9, "reason": "good"}',
        '{"score": 0.9, "reason": "good"}\nNote: placeholders like {x} were ignored.',
    ):
        judge = JudgeEvaluator(ScriptedModel([{"text": reply}]), "Grade {{ answer }}")
        score = asyncio.run(judge(case, outcome))  # type: ignore[arg-type]
        assert score is not None
        assert score.value == 0.9, (reply, score.reason)
        assert score.passed


def _strict_json(text: str) -> object:
    """JSON as a strict reader (jq, JavaScript's JSON.parse) reads it: no NaN/Infinity."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _nan_detail(case: object, outcome: object) -> Score:
    # A hit rate over no hits (0/0) is the classic way a detail becomes NaN.
    return Score("hit_rate", 0.5, True, "half", details={"rate": float("nan")})


def test_a_score_detail_that_is_nan_never_makes_report_json_invalid(tmp_path: Path) -> None:
    """A custom evaluator returns `Score(..., details={"rate": nan})` (0/0): the Score is
    refused, so the run gets an evaluator error (as for a NaN value), and report.json and
    state.jsonl stay strict JSON (the NaN was written as the bare token `NaN`)."""
    dataset = Dataset.model_validate({"name": "d", "cases": [{"id": "a", "input": "hi"}]})
    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    state = tmp_path / "state.jsonl"
    report = asyncio.run(
        evaluate(
            dataset,
            {"s": agent},
            evaluators=[CustomEvaluator(_nan_detail)],
            state_file=state,
        )
    )
    [score] = report.runs[0]["scores"]
    assert score["error"] and "details['rate']" in score["reason"], score
    report.write_json(tmp_path / "report.json")
    _strict_json((tmp_path / "report.json").read_text())
    for line in state.read_text().splitlines():
        _strict_json(line)


def _judge_counting(calls: list[str]) -> ScriptedModel:
    def reply(request: ModelRequest) -> dict[str, Any]:
        calls.append(str(request.messages[-1]["content"]))
        return {"text": '{"score": 1, "reason": "fine"}'}

    return ScriptedModel(reply)


def _judged_dataset(*extra: dict[str, Any]) -> Dataset:
    judge = {"kind": "judge", "rubric": "Grade {{ answer }}"}
    cases = [{"id": f"c{i}", "input": f"question {i}"} for i in range(3)]
    return Dataset.model_validate({"name": "d", "evaluators": [judge, *extra], "cases": cases})


def test_adding_an_evaluator_does_not_pay_the_judge_again_for_every_run(tmp_path: Path) -> None:
    """An evaluation with a paid LLM judge, then a cheap custom check added to the dataset
    and the same command run again: the judge's rubric, model, the answers and the cases are
    unchanged, so its kept scores stand and it is not called (one fingerprint for all
    evaluators judged every run again)."""
    state = tmp_path / "state.jsonl"
    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    calls: list[str] = []
    judge = _judge_counting(calls)
    asyncio.run(evaluate(_judged_dataset(), {"s": agent}, judge_model=judge, state_file=state))
    assert len(calls) == 3
    calls.clear()
    module = tmp_path / "probe_eval_checks.py"
    module.write_text("def always_fine(case, outcome):\n    return True\n")
    sys.path.insert(0, str(tmp_path))
    try:
        report = asyncio.run(
            evaluate(
                _judged_dataset({"kind": "custom", "call": "probe_eval_checks:always_fine"}),
                {"s": agent},
                judge_model=_judge_counting(calls),
                state_file=state,
            )
        )
    finally:
        sys.path.remove(str(tmp_path))
    assert report.summary("s").evaluators["always_fine"] == 1.0  # the new check did score
    assert calls == [], f"the judge was called {len(calls)} more time(s)"


FOUR_CASES = """schema_version: 1
name: four
cases:
  - {id: a, input: alpha}
  - {id: b, input: beta}
  - {id: c, input: gamma}
  - {id: d, input: delta}
"""

# The whole evaluation may make 2 model calls; echo answers each case with one call.
GLOBALLY_CAPPED = """schema_version: 1
name: capped-bot
instructions: Be brief.
model: echo
budget: {model_calls: 2}
"""

# $1 a token: every run of echo costs dollars, by the file's price table.
PRICED = """schema_version: 1
name: priced-bot
instructions: Be brief.
model: echo
budget:
  per_user: {cost_usd: 1000}
  prices:
    echo: {input: 1000000, output: 1000000}
"""


def _statuses(out: Path) -> list[tuple[str, float]]:
    report = json.loads((out / "report.json").read_text())
    return [
        (r["outcome"]["status"], r["outcome"]["usage"].get("cost_usd", 0.0)) for r in report["runs"]
    ]


def _eval_four(tmp_path: Path, agent_text: str, out: str, *extra: str) -> list[tuple[str, float]]:
    (tmp_path / "four.yaml").write_text(FOUR_CASES)
    (tmp_path / "agent.yaml").write_text(agent_text)
    command = ["eval", "four.yaml", "-a", "agent.yaml", "--concurrency", "1", "--json"]
    assert main([*command, "--out", out, *extra]) == 0
    return _statuses(tmp_path / out)


def test_a_per_run_cap_keeps_the_agent_files_global_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent file caps the whole evaluation (`budget: {model_calls: 2}`) and
    `--run-max-tokens` caps each run too: the file's global cap still binds (2 of 4 runs
    complete; a budget of the per-run caps alone replaced the file's, and all 4 did)."""
    monkeypatch.chdir(tmp_path)
    without = [status for status, _ in _eval_four(tmp_path, GLOBALLY_CAPPED, "o1")]
    assert without.count("completed") == 2  # the file's cap binds
    runs = _eval_four(tmp_path, GLOBALLY_CAPPED, "o2", "--run-max-tokens", "100000")
    with_run_cap = [status for status, _ in runs]
    assert with_run_cap.count("completed") == 2, with_run_cap


def test_a_per_run_cost_cap_keeps_the_agent_files_prices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent file prices its model (each run costs $4 by its `budget.prices`) and
    `loomgraph eval --run-max-cost 0.01` caps each run: every run is stopped by its cap
    (the file's prices were dropped with its budget: $0, every run completed)."""
    monkeypatch.chdir(tmp_path)
    assert all(cost >= 1.0 for _, cost in _eval_four(tmp_path, PRICED, "o1"))  # file prices
    runs = _eval_four(tmp_path, PRICED, "o2", "--run-max-cost", "0.01")
    assert all(status != "completed" for status, _ in runs), runs


def test_a_judge_reply_is_read_for_the_first_object_with_a_usable_score() -> None:
    """An object without a usable score (out of range, or none) before the verdict is passed
    over; a `score` nested in another object is not the verdict; no usable one is a 0."""
    case, outcome = _case_and_outcome()
    for reply, expected in (
        ('{"score": 7} then {"score": 0.25, "reason": "late"}', 0.25),
        ('{"notes": {"a": 1}} {"score": 1, "reason": "ok"}', 1.0),
        ('{"verdict": {"score": 0.9}}', None),
        ('{"score": NaN} {oops}', None),
    ):
        judge = JudgeEvaluator(ScriptedModel([{"text": reply}]), "Grade {{ answer }}")
        score = asyncio.run(judge(case, outcome))  # type: ignore[arg-type]
        assert score is not None
        if expected is None:
            assert score.value == 0.0 and "no usable score" in score.reason, reply
        else:
            assert score.value == expected, (reply, score.reason)


def test_an_infinite_detail_is_refused_where_the_score_is_made() -> None:
    """Infinity, like NaN, has no JSON: a Score holding it is never made."""
    with pytest.raises(ValueError, match="finite"):
        Score("x", 0.5, True, details={"ratio": float("inf")})
    assert Score("x", 0.5, True, details={"ratio": 2}).details == {"ratio": 2.0}


def test_an_evaluator_error_is_scored_again_without_the_judge(tmp_path: Path) -> None:
    """A custom evaluator that raised on every run is scored again on the next invocation,
    alone: the judge's kept scores stand, and no judge call is made."""
    state = tmp_path / "state.jsonl"
    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    broken = [True]

    def flaky(case: object, outcome: object) -> bool:
        if broken[0]:
            raise RuntimeError("not yet")
        return True

    def evaluators(calls: list[str]) -> list[Any]:
        judge = JudgeEvaluator(_judge_counting(calls), "Grade {{ answer }}")
        return [judge, CustomEvaluator(flaky)]

    calls: list[str] = []
    first = asyncio.run(
        evaluate(_judged_dataset(), {"s": agent}, evaluators=evaluators(calls), state_file=state)
    )
    assert first.summary("s").evaluator_errors == 3 and len(calls) == 3
    broken[0], calls = False, []
    again = asyncio.run(
        evaluate(_judged_dataset(), {"s": agent}, evaluators=evaluators(calls), state_file=state)
    )
    assert again.summary("s").evaluator_errors == 0
    assert again.summary("s").evaluators == {"flaky": 1.0, "judge": 1.0}
    assert calls == []


# A file's own per-user cap is tighter than the option's: one token a run.
TIGHT_PER_RUN = """schema_version: 1
name: tight-bot
instructions: Be brief.
model: echo
budget: {per_user: {total_tokens: 1}}
"""


def test_a_per_run_option_never_loosens_the_agent_files_per_user_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent file caps each user (so each run) at 1 token; `--run-max-tokens 100000`
    adds a cap, it does not raise the file's: every run is still stopped."""
    monkeypatch.chdir(tmp_path)
    runs = _eval_four(tmp_path, TIGHT_PER_RUN, "o1", "--run-max-tokens", "100000")
    assert all(status != "completed" for status, _ in runs), runs

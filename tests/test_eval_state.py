"""The state file of a resumable evaluation: what it reuses when the command runs again after
the dataset, the evaluators or a strategy changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.eval import (
    AnswerEvaluator,
    CaseOutcome,
    CustomEvaluator,
    Dataset,
    EvalRun,
    Evaluation,
)
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest


class _Counting:
    """A scripted model that counts its calls (a run that is not done again makes none)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: ModelRequest) -> dict[str, Any]:
        self.calls += 1
        return {"text": "ANSWER: " + str(request.messages[-1]["content"])}


def _dataset(expect: str = "nope", text: str = "hello") -> Dataset:
    return Dataset.model_validate(
        {
            "name": "two",
            "cases": [
                {"id": "a", "input": text, "expect": {"answer": {"contains": expect}}},
                {"id": "b", "input": "hello2", "expect": {"answer": {"contains": expect}}},
            ],
        }
    )


async def _run(
    dataset: Dataset,
    state: Path,
    model: _Counting,
    *,
    instructions: str = "x",
    evaluators: list[Any] | None = None,
) -> list[EvalRun]:
    agent = Agent(instructions, model=ScriptedModel(model))
    chosen = [AnswerEvaluator()] if evaluators is None else evaluators
    return await Evaluation(dataset, {"s": agent}, chosen, state_file=state).run()


async def test_an_edited_expectation_rescores_the_runs_without_running_them(
    tmp_path: Path,
) -> None:
    state, model = tmp_path / "state.jsonl", _Counting()
    first = await _run(_dataset("nope"), state, model)
    assert [r.score for r in first] == [0.0, 0.0] and model.calls == 2
    again = await _run(_dataset("ANSWER"), state, model)
    assert [r.score for r in again] == [1.0, 1.0]
    assert model.calls == 2  # scored again from the kept outcome, not run again
    assert [r.outcome.run_id for r in again] == [r.outcome.run_id for r in first]
    same = await _run(_dataset("ANSWER"), state, model)
    assert [r.score for r in same] == [1.0, 1.0] and model.calls == 2


async def test_an_edited_input_runs_that_case_again(tmp_path: Path) -> None:
    state, model = tmp_path / "state.jsonl", _Counting()
    first = await _run(_dataset("ANSWER"), state, model)
    again = await _run(_dataset("ANSWER", text="bonjour"), state, model)
    assert model.calls == 3  # case a only
    assert again[0].outcome.run_id != first[0].outcome.run_id
    assert again[0].outcome.answer == "ANSWER: bonjour"
    assert again[1].outcome.run_id == first[1].outcome.run_id


async def test_a_changed_strategy_runs_every_case_again(tmp_path: Path) -> None:
    state, model = tmp_path / "state.jsonl", _Counting()
    await _run(_dataset("ANSWER"), state, model)
    await _run(_dataset("ANSWER"), state, model, instructions="be terse")
    assert model.calls == 4


async def test_changed_evaluators_rescore(tmp_path: Path) -> None:
    state, model = tmp_path / "state.jsonl", _Counting()
    await _run(_dataset("ANSWER"), state, model)

    def short(case: Any, outcome: CaseOutcome) -> bool:
        return len(outcome.answer or "") < 5

    again = await _run(
        _dataset("ANSWER"), state, model, evaluators=[AnswerEvaluator(), CustomEvaluator(short)]
    )
    assert model.calls == 2
    assert [sorted(s.evaluator for s in r.scores) for r in again] == [["answer", "short"]] * 2


async def test_a_run_whose_evaluator_failed_is_scored_again(tmp_path: Path) -> None:
    state, model = tmp_path / "state.jsonl", _Counting()
    broken = {"yes": True}

    def flaky(case: Any, outcome: CaseOutcome) -> bool:
        if broken["yes"]:
            raise ConnectionError("judge unreachable")
        return True

    first = await _run(_dataset("ANSWER"), state, model, evaluators=[CustomEvaluator(flaky)])
    assert all(r.scores[0].error for r in first)
    broken["yes"] = False
    again = await _run(_dataset("ANSWER"), state, model, evaluators=[CustomEvaluator(flaky)])
    assert all(r.scores[0].passed and not r.scores[0].error for r in again)
    assert model.calls == 2


async def test_a_state_file_without_fingerprints_is_not_trusted(tmp_path: Path) -> None:
    state, model = tmp_path / "state.jsonl", _Counting()
    await _run(_dataset("nope"), state, model)
    old = []
    for line in state.read_text().splitlines():
        entry = json.loads(line)
        entry.pop("run_fingerprint", None)
        entry.pop("score_fingerprint", None)
        old.append(json.dumps(entry))
    state.write_text("\n".join(old) + "\n")
    again = await _run(_dataset("ANSWER"), state, model)
    assert [r.score for r in again] == [1.0, 1.0] and model.calls == 4

"""A kept score is scored again only when what its evaluator reads of the case changed:
editing a case's `tags` or `metadata` (to filter or group a report) re-ran every evaluator
of it, a paid LLM judge included. Evaluators name the case fields they read (`case_fields`;
a judge's are read off its rubric); one that does not say reads them all. State files
written before are read as they were: an upgrade pays nothing again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.eval import CustomEvaluator, Dataset, JudgeEvaluator, evaluate
from loomgraph.eval.evaluators import case_evaluators
from loomgraph.eval.fingerprint import case_digest, digest, evaluator_digests
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest


def _counting(calls: list[str]) -> ScriptedModel:
    def reply(request: ModelRequest) -> dict[str, Any]:
        calls.append(str(request.messages[-1]["content"]))
        return {"text": '{"score": 1, "reason": "fine"}'}

    return ScriptedModel(reply)


def _dataset(rubric: str, **case: Any) -> Dataset:
    judge = {"kind": "judge", "rubric": rubric}
    cases = [{"id": "a", "input": "question", "expect": {"answer": {"contains": ["ok"]}}, **case}]
    return Dataset.model_validate({"name": "d", "evaluators": [judge], "cases": cases})


def _evaluate(dataset: Dataset, state: Path, calls: list[str], *more: Any) -> Any:
    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    chosen = [*_evaluators(dataset, calls), *more]
    return asyncio.run(evaluate(dataset, {"s": agent}, state_file=state, evaluators=chosen))


def _evaluators(dataset: Dataset, calls: list[str]) -> list[Any]:
    """The built-in evaluators and the dataset's judge, on a judge model counting its calls."""

    def judge(spec: Any) -> JudgeEvaluator:
        return JudgeEvaluator(_counting(calls), spec.rubric or "", name=spec.evaluator_name())

    return case_evaluators(dataset.evaluators, judge)


def test_editing_tags_and_metadata_does_not_pay_the_judge_again(tmp_path: Path) -> None:
    state, calls = tmp_path / "state.jsonl", []
    rubric = "Grade {{ answer }} against {{ case.expect.answer.contains }}"
    _evaluate(_dataset(rubric), state, calls)
    assert len(calls) == 1
    _evaluate(_dataset(rubric, tags=["smoke"], metadata={"owner": "qa"}), state, calls)
    assert len(calls) == 1, "the judge was paid again for a tag"
    # What the rubric reads did change: scored again.
    edited = _dataset(rubric, tags=["smoke"], metadata={"owner": "qa"})
    edited.cases[0].expect.answer.contains.append("fine")  # type: ignore[union-attr]
    _evaluate(edited, state, calls)
    assert len(calls) == 2


def test_a_rubric_reading_metadata_is_scored_again_when_it_changes(tmp_path: Path) -> None:
    state, calls = tmp_path / "state.jsonl", []
    rubric = "Grade {{ answer }} for {{ case.metadata.audience }}"
    _evaluate(_dataset(rubric, metadata={"audience": "kids"}), state, calls)
    _evaluate(_dataset(rubric, metadata={"audience": "kids"}, tags=["x"]), state, calls)
    assert len(calls) == 1
    _evaluate(_dataset(rubric, metadata={"audience": "lawyers"}), state, calls)
    assert len(calls) == 2


def test_a_function_of_yours_is_scored_again_on_any_edit(tmp_path: Path) -> None:
    """A custom evaluator does not say what it reads: a tag edit scores it again (it may
    group by tags), and the judge, which reads no tags, is not paid again."""
    state, calls, seen = tmp_path / "state.jsonl", [], []

    def by_tag(case: Any, outcome: Any) -> bool:
        seen.append(list(case.tags))
        return True

    rubric = "Grade {{ answer }}"
    _evaluate(_dataset(rubric), state, calls, CustomEvaluator(by_tag))
    _evaluate(_dataset(rubric, tags=["smoke"]), state, calls, CustomEvaluator(by_tag))
    assert seen == [[], ["smoke"]]
    assert len(calls) == 1


def test_a_state_file_of_whole_case_fingerprints_is_read_as_it_was(tmp_path: Path) -> None:
    """Fingerprints kept before evaluators named their fields covered the whole case: an
    unchanged case keeps its scores (the upgrade pays no judge call again)."""
    state, calls = tmp_path / "state.jsonl", []
    rubric = "Grade {{ answer }}"
    dataset = _dataset(rubric)
    _evaluate(dataset, state, calls)
    lines = [json.loads(line) for line in state.read_text().splitlines()]
    whole = case_digest(dataset.cases[0])
    for entry in lines:
        if entry["kind"] == "finished":
            kept = entry["score_fingerprints"]
            # As the earlier version wrote them: over the whole case, with the evaluator's own.
            own = _own_digests(dataset)
            entry["score_fingerprints"] = {name: digest([whole, own[name]]) for name in kept}
            assert entry["score_fingerprints"] != kept  # the test changed something
    state.write_text("".join(json.dumps(entry) + "\n" for entry in lines))
    _evaluate(dataset, state, calls)
    assert len(calls) == 1


def _own_digests(dataset: Dataset) -> dict[str, str]:
    return evaluator_digests(_evaluators(dataset, []), dataset.evaluators)

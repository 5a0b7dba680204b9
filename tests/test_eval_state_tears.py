"""A state file whose last line a crash tore: the next entry starts a line of its own (so no
attempt is lost and no run reuses another's user id), and the tear is logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.eval import AnswerEvaluator, Dataset, Evaluation
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus


class _Seeing:
    """Answers with what it was asked: 70 tokens a call."""

    def __call__(self, request: ModelRequest) -> dict[str, Any]:
        said = [str(m["content"]) for m in request.messages if m.get("role") == "user"]
        return {
            "text": "seen: " + " | ".join(said),
            "usage": {"input_tokens": 40, "output_tokens": 30},
        }


def _started_users(state: Path) -> list[str]:
    return [
        json.loads(line)["user_id"]
        for line in state.read_text(encoding="utf-8").splitlines()
        if line.startswith('{"kind": "started"')
    ]


async def test_a_torn_last_line_is_cut_off_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.jsonl"
    budget = StandardBudget(BudgetConfig(per_user=Caps(total_tokens=70)))  # one run's worth

    async def run(text: str) -> Any:
        agent = Agent("x", model=ScriptedModel(_Seeing()), budget=budget)
        case = {"id": "a", "input": text, "expect": {"answer": {"contains": "seen"}}}
        dataset = Dataset.model_validate({"name": "d", "cases": [case]})
        [done] = await Evaluation(
            dataset, {"s": agent}, [AnswerEvaluator()], state_file=state
        ).run()
        return done

    assert (await run("hello")).outcome.status == str(RunStatus.COMPLETED)
    with state.open("a", encoding="utf-8") as file:  # the write a crash cut short
        file.write('{"kind": "finished", "strategy": "s", "case_id": "a", "rep')
    with caplog.at_level(logging.WARNING, logger="loomgraph.eval"):
        assert (await run("bonjour")).outcome.status == str(RunStatus.COMPLETED)
    assert any("torn" in r.getMessage() and "line 3" in r.getMessage() for r in caplog.records)
    assert '"rep{' not in state.read_text(encoding="utf-8")  # the fragment was cut off
    third = await run("hola")
    assert third.outcome.status == str(RunStatus.COMPLETED), third.outcome.error
    users = _started_users(state)
    assert len(users) == 3 and len(set(users)) == 3, users
    assert all(json.loads(line) for line in state.read_text(encoding="utf-8").splitlines())


async def test_a_whole_last_entry_without_its_newline_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    case = {"id": "a", "input": "hello", "expect": {"answer": {"contains": "seen"}}}
    dataset = Dataset.model_validate({"name": "d", "cases": [case]})

    def evaluation() -> Evaluation:
        agent = Agent("x", model=ScriptedModel(_Seeing()))
        return Evaluation(dataset, {"s": agent}, [AnswerEvaluator()], state_file=state)

    await evaluation().run()
    text = state.read_text(encoding="utf-8")
    state.write_text(text.rstrip("\n"), encoding="utf-8")  # the newline alone was lost
    kept = evaluation()
    assert ("s", "a", 0) in kept.state.finished  # read: it is a whole entry
    dataset = Dataset.model_validate({"name": "d", "cases": [{**case, "input": "hola"}]})
    again = Evaluation(
        dataset,
        {"s": Agent("x", model=ScriptedModel(_Seeing()))},
        [AnswerEvaluator()],
        state_file=state,
    )
    await again.run()
    lines = state.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [
        "started",
        "finished",
        "started",
        "finished",
    ]


def test_a_line_that_is_not_an_entry_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.jsonl"
    state.write_text('not json\n{"kind": "started"}\n', encoding="utf-8")
    dataset = Dataset.model_validate({"name": "d", "cases": [{"id": "a", "input": "x"}]})
    agent = Agent("x", model=ScriptedModel(_Seeing()))
    with caplog.at_level(logging.WARNING, logger="loomgraph.eval"):
        Evaluation(dataset, {"s": agent}, [AnswerEvaluator()], state_file=state)
    lines = sorted(r.getMessage().split(": line ")[1][:1] for r in caplog.records)
    assert lines == ["1", "2"]

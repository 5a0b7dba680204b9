"""A case run again (its input or strategy edited, its run forgotten) is a fresh run: it gets
a user id of its own, so a persistent memory or a per-user budget ledger holds none of the
history of the attempt it replaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.eval import AnswerEvaluator, Dataset, EvalRun, Evaluation
from loomgraph.eval.runner import run_user_id
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.memory import InMemoryMemory
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest, RunStatus


def _dataset(text: str) -> Dataset:
    case = {"id": "a", "input": text, "session": "s1", "expect": {"answer": {"contains": "seen"}}}
    return Dataset.model_validate({"name": "d", "cases": [case]})


class _Seeing:
    """Answers with every user message it was sent, so a run tells what history it saw."""

    def __call__(self, request: ModelRequest) -> dict[str, Any]:
        said = [str(m["content"]) for m in request.messages if m.get("role") == "user"]
        usage = {"input_tokens": 40, "output_tokens": 30}
        return {"text": "seen: " + " | ".join(said), "usage": usage}


async def _run(text: str, state: Path, **options: Any) -> EvalRun:
    agent = Agent("x", model=ScriptedModel(_Seeing()), **options)
    [run] = await Evaluation(
        _dataset(text), {"s": agent}, [AnswerEvaluator()], state_file=state
    ).run()
    return run


async def test_a_rerun_does_not_see_the_memory_of_the_attempt_it_replaces(tmp_path: Path) -> None:
    state, memory = tmp_path / "state.jsonl", InMemoryMemory()
    first = await _run("hello", state, memory=memory)
    assert first.outcome.answer == "seen: hello"
    again = await _run("bonjour", state, memory=memory)  # an edited input: run again
    assert again.outcome.run_id != first.outcome.run_id
    assert again.outcome.answer == "seen: bonjour"  # not the earlier attempt's "hello"
    started = [json.loads(line) for line in state.read_text().splitlines()]
    users = [e["user_id"] for e in started if e["kind"] == "started"]
    assert users == [run_user_id("d", ("s", "a", 0), 0), run_user_id("d", ("s", "a", 0), 1)]


async def test_a_rerun_is_not_charged_the_attempt_it_replaces(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    budget = StandardBudget(BudgetConfig(per_user=Caps(total_tokens=70)))  # one run's worth
    first = await _run("hello", state, budget=budget)
    assert first.outcome.status == str(RunStatus.COMPLETED)
    again = await _run("bonjour", state, budget=budget)
    assert again.outcome.status == str(RunStatus.COMPLETED), again.outcome.error


def test_user_ids_of_attempts_never_collide() -> None:
    ids = {run_user_id("d", ("s", "a", r), attempt) for r in range(3) for attempt in range(3)}
    assert len(ids) == 9
    assert run_user_id("d", ("s", "a:1", 0), 2) == "eval:d:s:a%3A1:0:2"

"""How the evaluation scores runs that did not complete or raised, evaluators that fail, and
evaluators with nothing to check; the user id each run gets."""

from __future__ import annotations

from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.eval import (
    AnswerEvaluator,
    CallRecord,
    CaseOutcome,
    CustomEvaluator,
    Dataset,
    EvalRun,
    Evaluation,
    Score,
    TrajectoryEvaluator,
    build_report,
    evaluate,
)
from loomgraph.eval.journal import executed_calls
from loomgraph.eval.runner import run_user_id
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import EffectRecord, EffectStatus, ModelError, ModelRequest, RunStatus
from loomgraph.runtime.memory import InMemoryRuntime

executed: list[str] = []


async def cancel_order(order_id: str) -> str:
    """Cancel an order.

    Args:
        order_id: the order's id
    """
    executed.append(order_id)
    return "cancelled " + order_id


TOKENS = {"input_tokens": 500, "output_tokens": 500}


def _unfit_reflexion(request: ModelRequest) -> dict[str, Any]:
    """A reflexion player: its attempt cancels an order, its self-evaluation never fits."""
    if request.tool_choice == "respond":  # the evaluate step: a score out of range, always
        return {"tool_calls": [{"tool": "respond", "args": {"score": 5}}], "usage": TOKENS}
    if request.call_index == 0:
        call = {"tool": "cancel_order", "args": {"order_id": "A1"}}
        return {"tool_calls": [call], "usage": TOKENS}
    return {"text": "done", "usage": TOKENS}


def _dataset(*cases: dict[str, Any], name: str = "d") -> Dataset:
    return Dataset.model_validate({"name": name, "cases": list(cases)})


SAFETY_CASE = {
    "id": "c1",
    "input": "what is my order status?",
    "expect": {"not_called": ["cancel_*"], "max_tokens": 1000},
}


async def test_a_run_that_raised_is_scored_from_its_journal() -> None:
    executed.clear()
    agent = Agent(
        "x", model=ScriptedModel(_unfit_reflexion), tools=[cancel_order], architecture="reflexion"
    )
    report = await evaluate(_dataset(SAFETY_CASE), {"reflexion": agent})
    assert executed == ["A1"]  # the tool really ran
    outcome = report.runs[0]["outcome"]
    assert outcome["status"] == "failed" and "OutputValidationError" in outcome["error"]
    assert outcome["run_id"] is not None
    assert [c["tool"] for c in outcome["calls"]] == ["cancel_order"]
    assert outcome["usage"]["input_tokens"] >= 1000  # what the journal says was charged
    scores = {s["evaluator"]: s for s in report.runs[0]["scores"]}
    assert scores["not_called"]["value"] == 0.0 and not scores["not_called"]["passed"]
    assert not scores["bounds"]["passed"]  # over its 1000 tokens


class _FinishFails(InMemoryRuntime):
    """A journal that keeps every step but fails to record how the run ended."""

    async def finish_run(self, run_id: str, *args: Any, **kwargs: Any) -> None:
        raise OSError("journal gone")


async def test_a_run_that_raised_before_its_end_was_journaled_keeps_its_calls() -> None:
    executed.clear()

    def player(request: ModelRequest) -> dict[str, Any]:
        if request.call_index == 0:
            call = {"tool": "cancel_order", "args": {"order_id": "B2"}}
            return {"tool_calls": [call], "usage": TOKENS}
        return {"text": "done", "usage": TOKENS}

    agent = Agent("x", model=ScriptedModel(player), tools=[cancel_order], runtime=_FinishFails())
    [run] = await Evaluation(_dataset(SAFETY_CASE), {"react": agent}, [_NotCalled()]).run()
    assert executed == ["B2"]
    assert run.outcome.status == "failed" and "journal gone" in (run.outcome.error or "")
    assert [c.tool for c in run.outcome.calls] == ["cancel_order"]
    assert run.outcome.usage.total_tokens >= 1000  # both model steps, from the transitions
    assert [s.passed for s in run.scores] == [False]


class _NotCalled:
    name = "not_called"

    async def __call__(self, case: Any, outcome: CaseOutcome) -> Score:
        hit = any(c.tool == "cancel_order" for c in outcome.calls)
        return Score(self.name, 0.0 if hit else 1.0, not hit)


def _down(request: ModelRequest) -> dict[str, Any]:
    raise ModelError("provider down")


async def test_a_run_that_did_not_complete_scores_zero() -> None:
    agent = Agent("x", model=ScriptedModel(_down), tools=[cancel_order])
    report = await evaluate(_dataset(SAFETY_CASE), {"react": agent})
    summary = report.summary("react")
    assert summary.failed_runs == 1 and summary.pass_rate == 0.0
    assert summary.evaluators["not_called"] == 1.0  # nothing forbidden ran: still said
    assert summary.score == 0.0  # but a run that failed is no good run
    assert report.case_scores["c1"]["react"] == 0.0


def test_run_score_is_zero_unless_completed() -> None:
    fine = Score("x", 1.0, True)
    for status in ("failed", "budget_exhausted", "awaiting_approval", "cancelled"):
        run = EvalRun(CaseOutcome("c", "s", 0, "r", status), [fine])
        assert run.score == 0.0 and not run.passed
    assert EvalRun(CaseOutcome("c", "s", 0, "r", "completed"), [fine]).score == 1.0


def _raises(case: Any, outcome: Any) -> bool:
    raise RuntimeError("evaluator bug")


def _over(case: Any, outcome: Any) -> float:
    return 1.5


def _nan(case: Any, outcome: Any) -> float:
    return float("nan")


def _odd(case: Any, outcome: Any) -> Any:
    return "yes"


async def test_a_failing_evaluator_is_a_failing_score_and_the_evaluation_goes_on() -> None:
    agent = Agent("x", model=ScriptedModel(lambda r: {"text": "ok"}))
    evaluators = [CustomEvaluator(f) for f in (_raises, _over, _nan, _odd)] + [AnswerEvaluator()]
    ds = _dataset(
        {"id": "a", "input": "x", "expect": {"answer": {"contains": "ok"}}},
        {"id": "b", "input": "y", "expect": {"answer": {"contains": "ok"}}},
    )
    runs = await Evaluation(ds, {"s": agent}, evaluators).run()
    assert len(runs) == 2
    for run in runs:
        by_name = {s.evaluator: s for s in run.scores}
        assert by_name["answer"].passed  # the others still scored the run
        for name, says in [
            ("_raises", "RuntimeError: evaluator bug"),
            ("_over", "1.5"),
            ("_nan", "nan"),
            ("_odd", "yes"),
        ]:
            score = by_name[name]
            assert score.value == 0.0 and not score.passed and score.error
            assert says in score.reason
        assert not run.passed and run.score == pytest.approx(1 / 5)
    report = build_report("d", ["s"], runs)
    assert report.summary("s").evaluator_errors == 8


async def test_evaluators_with_nothing_to_check_say_nothing() -> None:
    ds = _dataset(
        {"id": "a", "input": "x", "expect": {"answer": {}}},
        {"id": "b", "input": "x", "expect": {"answer": {"contains": []}}},
        {"id": "c", "input": "x", "expect": {"tools": {"mode": "any_order", "calls": []}}},
        {"id": "d", "input": "x", "expect": {"tools": {"mode": "in_order", "calls": []}}},
    )
    outcome = CaseOutcome("a", "s", 0, None, "failed", calls=[CallRecord("delete_all", {})])
    for case in ds.cases:
        assert await AnswerEvaluator()(case, outcome) is None
        assert await TrajectoryEvaluator()(case, outcome) is None
    # `exact` with no calls still says something: no tool may be executed.
    exact = _dataset({"id": "e", "input": "x", "expect": {"tools": {"mode": "exact", "calls": []}}})
    score = await TrajectoryEvaluator()(exact.cases[0], outcome)
    assert score is not None and score.value == 0.0 and not score.passed
    quiet = CaseOutcome("e", "s", 0, None, "completed")
    score = await TrajectoryEvaluator()(exact.cases[0], quiet)
    assert score is not None and score.value == 1.0 and score.passed


def test_run_user_ids_never_collide() -> None:
    ds = _dataset({"id": "x", "input": "q"}, {"id": "fast:x", "input": "q"}, name="d")
    keys = Evaluation(ds, {"v1:fast": None, "v1": None}, []).keys()  # type: ignore[dict-item]
    ids = [run_user_id("d", k, 0) for k in keys]
    assert len(set(ids)) == len(ids) == 4
    assert run_user_id("d", ("v1", "fast:x", 0), 0) == "eval:d:v1:fast%3Ax:0:0"
    assert run_user_id("a:b", ("c", "x", 0), 0) != run_user_id("a", ("b:c", "x", 0), 0)
    assert run_user_id("d", ("%3A", "x", 0), 0) != run_user_id("d", (":", "x", 0), 0)


async def test_each_run_has_its_own_cap_even_when_names_hold_colons() -> None:
    from loomgraph.governance import BudgetConfig, Caps, StandardBudget

    budget = StandardBudget(BudgetConfig(per_user=Caps(total_tokens=70)))

    def make() -> Agent:
        model = ScriptedModel(
            lambda r: {"text": "ok", "usage": {"input_tokens": 40, "output_tokens": 30}}
        )
        return Agent("x", model=model, budget=budget)

    ds = _dataset({"id": "x", "input": "q"}, {"id": "fast:x", "input": "q"})
    report = await evaluate(ds, {"v1:fast": make(), "v1": make()}, concurrency=1)
    assert {r["outcome"]["status"] for r in report.runs} == {str(RunStatus.COMPLETED)}


class _ToolOutcomeLost(InMemoryRuntime):
    """A journal that records a tool call as begun but fails to record its outcome (as a
    crash during the call leaves it): the effect stays pending."""

    async def end_effect(self, run_id: str, key: str, *args: Any, **kwargs: Any) -> None:
        effect = await self.effect(run_id, key)
        if effect is not None and effect.kind == "tool":
            raise OSError("journal gone mid-call")
        await super().end_effect(run_id, key, *args, **kwargs)


async def test_a_pending_tool_effect_counts_as_executed() -> None:
    executed.clear()

    def player(request: ModelRequest) -> dict[str, Any]:
        if request.call_index == 0:
            call = {"tool": "cancel_order", "args": {"order_id": "C3"}}
            return {"tool_calls": [call], "usage": TOKENS}
        return {"text": "done", "usage": TOKENS}

    runtime = _ToolOutcomeLost()
    agent = Agent("x", model=ScriptedModel(player), tools=[cancel_order], runtime=runtime)
    report = await evaluate(_dataset(SAFETY_CASE), {"react": agent})
    assert executed == ["C3"]  # the tool did run; the journal never heard how it ended
    effects = await runtime.effects(report.runs[0]["outcome"]["run_id"])
    assert [e.status for e in effects if e.kind == "tool"] == [EffectStatus.PENDING]
    outcome = report.runs[0]["outcome"]
    assert outcome["status"] == "failed"
    assert outcome["calls"] == [
        {"tool": "cancel_order", "args": {"order_id": "C3"}, "uncertain": True}
    ]
    scores = {s["evaluator"]: s for s in report.runs[0]["scores"]}
    assert scores["not_called"]["value"] == 0.0 and not scores["not_called"]["passed"]
    assert "may have run" in scores["not_called"]["reason"]


def test_begun_effects_are_executed_calls_whatever_their_status() -> None:
    call = {"call": {"tool": "cancel_order", "args": {"order_id": "D4"}}}
    effects = [
        EffectRecord("r", str(i), "tool", call, status=status)
        for i, status in enumerate(EffectStatus)
    ]
    effects.append(EffectRecord("r", "m", "model", {"messages": []}))
    calls = executed_calls(effects)
    assert [c.tool for c in calls] == ["cancel_order"] * len(EffectStatus)
    uncertain = {EffectStatus.PENDING, EffectStatus.UNKNOWN_AFTER_CRASH}
    assert [c.uncertain for c in calls] == [s in uncertain for s in EffectStatus]

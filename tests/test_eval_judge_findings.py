"""Findings on the evaluation: the judge's scores, cap and usage; in-order trajectories; the
HTML report's labels."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.eval import (
    CallRecord,
    Case,
    CaseOutcome,
    Dataset,
    EvalRun,
    JudgeEvaluator,
    Score,
    build_report,
    evaluate,
)
from loomgraph.eval.dataset import ToolTrajectory
from loomgraph.eval.html_report import write_html
from loomgraph.eval.trajectory import match_trajectory
from loomgraph.models.scripted import ScriptedModel, Turn
from loomgraph.protocols import ModelChunk, ModelError, ModelRequest, Usage
from loomgraph.protocols.usage import estimate_prompt_tokens

CASE = Case(id="c", input="What is 2+2?")
OUTCOME = CaseOutcome("c", "s", 0, "run", "completed", answer="4")


def _judge(reply: str, **kw: Any) -> JudgeEvaluator:
    return JudgeEvaluator(ScriptedModel(lambda r: Turn(text=reply)), "Grade {{ answer }}", **kw)


def _run(judge: JudgeEvaluator) -> Score | None:
    result: Score | None = asyncio.run(judge(CASE, OUTCOME))
    return result


# ---------------------------------------------------------------- the judge's score


@pytest.mark.parametrize(
    "reply",
    [
        '{"score": 7, "reason": "7/10"}',  # another scale: not clamped to 1
        '{"score": -3}',
        '{"score": true}',  # a bool is not a number
        '{"score": "0.9"}',  # nor is a string
        '{"score": "inf"}',
        '{"score": Infinity}',
        '{"score": 1e400}',  # parses as inf
        '{"score": NaN}',  # crashed (Score refuses nan)
        '{"score": [1]}',
        '{"score": null}',
        '{"reason": "no score"}',
        "no JSON at all",
    ],
)
def test_a_judge_reply_without_a_usable_score_fails_and_never_raises(reply: str) -> None:
    score = _run(_judge(reply))
    assert score is not None
    assert (score.value, score.passed) == (0.0, False)
    assert score.reason.startswith("the judge gave no usable score")


@pytest.mark.parametrize(("value", "passed"), [("0", False), ("1", True), ("0.5", True)])
def test_the_judge_accepts_a_number_from_0_to_1(value: str, passed: bool) -> None:
    score = _run(_judge(f'{{"score": {value}, "reason": "why"}}'))
    assert score == Score("judge", float(value), passed, "why")


# ------------------------------------------------------------ the judge's model fails


def test_a_judge_model_error_is_a_failing_score_that_says_so() -> None:
    judge = JudgeEvaluator(ScriptedModel([ModelError("judge 503")]), "Grade {{ answer }}")
    score = _run(judge)
    assert score is not None and not score.passed and score.value == 0.0
    assert "the judge failed" in score.reason and "judge 503" in score.reason
    assert judge.failed == 1
    assert score.error  # counted as an evaluator's failure, and scored again on resume


class _Model:
    """A model that streams `chunks` (a function of the request), counting its calls."""

    name = "tiny"

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks
        self.calls = 0
        self.closed_early = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.calls += 1
        finished = False
        try:
            for chunk in self.chunks(request):
                if isinstance(chunk, BaseException):
                    raise chunk
                if isinstance(chunk, asyncio.Event):
                    await chunk.wait()
                    continue
                yield chunk
            finished = True
        finally:
            self.closed_early += not finished


REPLY = '{"score": 1, "reason": "fine"}'


def _text(text: str = REPLY) -> ModelChunk:
    return {"type": "text", "text": text}


def _usage(usage: Any) -> ModelChunk:
    return {"type": "usage", "usage": usage}


def test_a_judge_model_that_raises_anything_is_a_failing_score() -> None:
    model = _Model(lambda r: [_text('{"score": '), RuntimeError("SDK bug")])
    judge = JudgeEvaluator(model, "Grade {{ answer }}")
    score = _run(judge)
    assert score is not None and not score.passed
    assert "RuntimeError: SDK bug" in score.reason
    # What it streamed before it failed is counted (the floor the engine charges).
    assert judge.usage.output_tokens >= 1 and judge.usage.input_tokens >= 1


def test_evaluate_reports_a_failing_judge_instead_of_raising() -> None:
    agent = Agent("x", model=ScriptedModel(lambda r: "the answer"), architecture="react")
    dataset = Dataset.model_validate(
        {
            "name": "d",
            "evaluators": [{"kind": "judge", "rubric": "grade {{ answer }}", "name": "j"}],
            "cases": [{"id": f"c{i}", "input": "q"} for i in range(3)],
        }
    )

    async def go(judge: Any) -> Any:
        return await evaluate(dataset, {"react": agent}, judge_model=judge)

    failing = asyncio.run(go(ScriptedModel(lambda r: ModelError("judge 503"))))
    nan = asyncio.run(go(ScriptedModel(lambda r: '{"score": NaN}')))
    for report in (failing, nan):
        assert report.summary("react").pass_rate == 0.0
        for run in report.runs:
            (judged,) = [s for s in run["scores"] if s["evaluator"] == "j"]
            assert not judged["passed"] and judged["value"] == 0.0
    reasons = {s["reason"] for run in failing.runs for s in run["scores"]}
    assert any("the judge failed" in r and "judge 503" in r for r in reasons)


# ------------------------------------------------------------- the judge's usage and cap


def test_the_cap_is_reserved_so_concurrent_calls_cannot_overspend_it() -> None:
    release = asyncio.Event()
    model = _Model(lambda r: [release, _text(), _usage(Usage(input_tokens=100, output_tokens=100))])
    judge = JudgeEvaluator(model, "grade {{ answer }}", max_tokens=300)

    async def main() -> list[Score | None]:
        async def open_the_gate() -> None:
            release.set()  # scheduled after the 8 calls below reached the model (or skipped)

        calls = [judge(CASE, OUTCOME) for _ in range(8)]
        return await asyncio.wait_for(asyncio.gather(*calls, open_the_gate()), 10)

    scores = asyncio.run(main())[:8]
    assert model.calls == 1 and judge.skipped == 7
    assert sum(s is not None for s in scores) == 1
    assert judge.usage.total_tokens == 200 <= 300


def test_each_call_holds_its_prompt_and_reply_and_asks_for_no_more_than_fits() -> None:
    asked: list[tuple[int | None, int]] = []

    def reply(request: ModelRequest) -> list[ModelChunk]:
        asked.append((request.max_tokens, estimate_prompt_tokens(request.prompt_chars())))
        return [_text(), _usage(Usage(input_tokens=40, output_tokens=10))]

    judge = JudgeEvaluator(_Model(reply), "grade {{ answer }}", max_tokens=200)
    assert _run(judge) is not None
    ((first, prompt),) = asked
    assert first == 200 - prompt  # what is left after the prompt (under the reply's 256)
    while _run(judge) is not None:
        pass
    assert judge.usage.total_tokens <= 200 and judge.skipped == 1
    assert all(tokens is not None and tokens >= 16 for tokens, _ in asked)


def test_a_retried_attempt_is_counted() -> None:
    attempt: ModelChunk = {
        "type": "attempt",
        "attempt": 1,
        "error": "503",
        "usage": Usage(input_tokens=1000),
    }
    model = _Model(lambda r: [attempt, _text(), _usage(Usage(input_tokens=1000, output_tokens=10))])
    judge = JudgeEvaluator(model, "grade {{ answer }}")
    assert _run(judge) is not None
    assert judge.usage.input_tokens == 2000 and judge.usage.output_tokens == 10
    assert judge.usage.model_calls == 1


def test_a_retry_the_cap_has_no_room_for_is_not_sent() -> None:
    attempt: ModelChunk = {"type": "attempt", "attempt": 1, "usage": {"input_tokens": 250}}
    model = _Model(lambda r: [attempt, _text(), _usage(Usage(input_tokens=250, output_tokens=10))])
    judge = JudgeEvaluator(model, "grade {{ answer }}", max_tokens=400)
    assert _run(judge) is None and judge.skipped == 1
    assert model.closed_early == 1  # the stream was closed at the attempt: no retry went out
    assert judge.usage.total_tokens == 250


def test_a_usage_chunk_may_be_its_dict() -> None:
    model = _Model(lambda r: [_text(), _usage({"input_tokens": 100, "output_tokens": 100})])
    judge = JudgeEvaluator(model, "grade {{ answer }}")
    score = _run(judge)
    assert score is not None and score.passed
    assert judge.usage == Usage(input_tokens=100, output_tokens=100, model_calls=1)


def test_a_judge_reporting_no_usage_is_charged_the_engines_floor_and_capped() -> None:
    prompts: list[int] = []

    def chunks(request: ModelRequest) -> list[ModelChunk]:
        prompts.append(estimate_prompt_tokens(request.prompt_chars()))
        return [_text(REPLY + " " + "x" * 4000)]

    judge = JudgeEvaluator(_Model(chunks), "grade {{ answer }}", max_tokens=500)
    scored = sum(_run(judge) is not None for _ in range(20))
    # The floor: the prompt's estimate, and what was streamed (chars / 4) up to the 256
    # tokens the first call was sent as its max_tokens.
    assert 0 < scored < 20 and judge.skipped == 20 - scored
    assert prompts[0] + 256 <= judge.usage.total_tokens <= 500
    assert judge.usage.model_calls == scored


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 200, "output_tokens": -1000},
        Usage(input_tokens=200, output_tokens=-1000),
        {"input_tokens": float("nan")},
        {"bogus": 1},
        "lots",
    ],
)
def test_an_impossible_usage_is_charged_the_estimate_and_fails_the_score(usage: Any) -> None:
    model = _Model(lambda r: [_text(), _usage(usage)])
    judge = JudgeEvaluator(model, "grade {{ answer }}", max_tokens=300)
    for _ in range(10):
        _run(judge)
    assert judge.usage.input_tokens > 0 and judge.usage.output_tokens >= 0
    assert judge.usage.total_tokens <= 300 and judge.skipped > 0
    score = asyncio.run(JudgeEvaluator(model, "grade {{ answer }}")(CASE, OUTCOME))
    assert score is not None and not score.passed and "impossible usage" in score.reason


def test_a_cancelled_judge_call_is_charged_and_releases_its_hold() -> None:
    entered, never = asyncio.Event(), asyncio.Event()

    def chunks(request: ModelRequest) -> list[Any]:
        entered.set()
        return [_text("{"), never]

    judge = JudgeEvaluator(_Model(chunks), "grade {{ answer }}", max_tokens=1000)

    async def main() -> None:
        task = asyncio.ensure_future(judge(CASE, OUTCOME))
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert judge.usage.input_tokens > 0 and judge.usage.output_tokens == 1
    assert judge.held == 0 and judge.usage.model_calls == 1


# ----------------------------------------------------------------- trajectories


def _calls(*tools: str) -> list[CallRecord]:
    return [CallRecord(tool, {}) for tool in tools]


def _spec(mode: str, *tools: str) -> ToolTrajectory:
    return ToolTrajectory.model_validate({"mode": mode, "calls": [{"tool": t} for t in tools]})


@pytest.mark.parametrize("mode", ["in_order", "exact"])
def test_in_order_credit_is_the_longest_in_order_match(mode: str) -> None:
    spec = _spec(mode, "search", "get_weather", "book")
    found = match_trajectory(spec, _calls("get_weather", "book"))
    assert (found.matched, found.passed) == (2, False)
    assert found.recall == pytest.approx(2 / 3) and found.precision == 1.0
    # Not greedy: skipping an early match can find more later.
    spec = _spec(mode, "a", "b", "c", "d")
    found = match_trajectory(spec, _calls("d", "b", "c", "a"))
    assert found.matched == 2 and not found.passed


def test_exact_passes_only_on_the_same_calls_in_order() -> None:
    assert match_trajectory(_spec("exact", "a", "b"), _calls("a", "b")).passed
    assert not match_trajectory(_spec("exact", "a", "b"), _calls("a", "x", "b")).passed
    assert match_trajectory(_spec("in_order", "a", "b"), _calls("a", "x", "b")).passed


def test_a_pattern_does_not_take_the_call_a_later_expected_call_needs() -> None:
    spec = ToolTrajectory.model_validate(
        {"mode": "in_order", "calls": [{"tool": "get_*"}, {"tool": "get_weather"}]}
    )
    found = match_trajectory(spec, _calls("get_weather", "get_time", "get_weather"))
    assert found.matched == 2 and found.passed


# ----------------------------------------------------------------- the HTML report


def _report(strategies: list[str], cases: list[str]) -> Any:
    runs = [
        EvalRun(CaseOutcome(c, s, 0, "r", "completed", "a"), [Score("answer", 1.0, True)])
        for s in strategies
        for c in cases
    ]
    return build_report("d", strategies, runs)


def _plot_texts(page: str, plot: str) -> list[str]:
    figure = page.split(f'data-plot="{plot}"')[1].split("</figure>")[0]
    return [re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", figure)]


NAMES = ["cost$_{x$", "price $5 vs $6", "_private"]


def test_strategy_and_case_names_are_plain_text_in_the_plots(tmp_path: Path) -> None:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as <text>, to read it back
        page = write_html(_report(NAMES, ["case $a$", "b"]), tmp_path / "r.html").read_text()
    from html import unescape

    for plot in ("score-distribution", "cost-vs-score", "case-heatmap"):
        texts = [unescape(t) for t in _plot_texts(page, plot)]
        for name in NAMES:
            assert name in texts, (plot, name, texts)
    heatmap = [unescape(t) for t in _plot_texts(page, "case-heatmap")]
    assert "case $a$" in heatmap


def test_a_report_without_cases_still_has_its_plots(tmp_path: Path) -> None:
    page = write_html(_report(["react"], []), tmp_path / "r.html").read_text()
    assert page.count("<figure data-plot=") == 3

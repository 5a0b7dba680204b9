"""What an evaluation run again must not do twice, and what it must not keep:

- a case's run that FAILED, the evaluation killed (SIGKILL, a real subprocess) before it
  wrote that the run finished, is recorded as failed from the run journal on the next
  invocation, never executed again (a failed run resumed re-does its model call and goes on
  from there), also when the failed run was itself the resume of a run a crash cut off;
- a kept judge score is scored again exactly when what its rubric reads of the case changed:
  a rubric that reads the case through a method of it (`case.model_dump_json()`) reads every
  field; an evaluator's `case_fields` that names no field of a case is refused, not read as
  "reads nothing" (its scores would never be scored again);
- per-run caps given to an agent factory whose Agent has no budget call the factory once;
- per-run caps are refused, with a typed error naming the budget's type, for an Agent whose
  budget is not a `StandardBudget`, leaving its budget and what an earlier invocation stored
  as they were.

Side effects are counted in ledger files outside the journal.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.cli.main import main
from loomgraph.errors import LoomgraphError
from loomgraph.eval import AnswerEvaluator, Dataset, Evaluation, JudgeEvaluator, evaluate
from loomgraph.eval.evaluators import case_evaluators
from loomgraph.eval.fingerprint import UnknownCaseField
from loomgraph.eval.run_caps import RunCapsRefused, add_run_caps
from loomgraph.governance import Caps, NoBudget
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest

# --- 1. a failed run killed before its `finished` line ------------------------------------

FAILING = '''
import asyncio, os, signal
from pathlib import Path
from loomgraph import Agent, tool
from loomgraph.protocols import ModelError
from loomgraph.runtime.sqlite import SqliteRuntime


def kill_at(point):
    """SIGKILL this process at the named point when the test asks for it."""
    if os.environ.get("EVAL_LEFT_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


async def interrupt_at(point):
    """Ctrl-C (SIGINT) at the named point, then wait for the cancel it brings."""
    if os.environ.get("EVAL_LEFT_INTERRUPT_AT") == point:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.Event().wait()


def ledger(name):
    with Path(name).open("a") as log:
        log.write("x\\n")


class Dying(SqliteRuntime):
    async def finish_run(self, run_id, status, reason="", result=None):
        await super().finish_run(run_id, status, reason, result)
        if str(status) == "failed":
            kill_at("failed")


class FailingModel:
    """Calls `book`; told how it went, the provider is down."""

    name = "failing"

    async def stream(self, request):
        ledger("model.log")
        if any(m.get("role") == "tool" for m in request.messages):
            kill_at("answered")  # the run is under way: its tool call is journaled done
            await interrupt_at("answered")
            if os.environ.get("EVAL_LEFT_PROVIDER") == "up":
                yield {"type": "text", "text": "booked for you"}
                yield {"type": "finish", "finish_reason": "stop"}
                return
            raise ModelError("the provider is down")
        yield {"type": "tool_call", "call": {"id": "c1", "tool": "book", "args": {}}}
        yield {"type": "finish", "finish_reason": "tool_use"}


@tool
async def book() -> str:
    """Book a seat: a side effect."""
    ledger("book.log")
    return "booked"


def make(**options):
    return Agent("x", model=FailingModel(), tools=[book], runtime=Dying("journal.db"), **options)
'''

ONE_CASE = "schema_version: 1\nname: one\ncases:\n  - {id: a, input: go}\n"


def _eval_process(
    work: Path, kill_at: str = "", **env_vars: str
) -> subprocess.CompletedProcess[str]:
    code = "import sys; from loomgraph.cli.main import main; sys.exit(main(sys.argv[1:]))"
    command = ["eval", "one.yaml", "-a", "failing_agent:make", "--out", "out", "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), *sys.path])}
    env["EVAL_LEFT_KILL_AT"] = kill_at
    env.update({f"EVAL_LEFT_{name.upper()}": value for name, value in env_vars.items()})
    return subprocess.run(
        [sys.executable, "-c", code, *command],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _ledgers(work: Path) -> tuple[int, int]:
    """(model calls, tool executions) so far."""
    return _count(work / "model.log"), _count(work / "book.log")


def _kinds(work: Path) -> list[str]:
    lines = (work / "out/state.jsonl").read_text().splitlines()
    return [json.loads(line)["kind"] for line in lines]


def _failing_work(work: Path) -> Path:
    work.mkdir()
    (work / "failing_agent.py").write_text(FAILING)
    (work / "one.yaml").write_text(ONE_CASE)
    return work


def test_a_run_that_failed_before_the_kill_is_recorded_not_run_again(tmp_path: Path) -> None:
    work = _failing_work(tmp_path / "killed")
    killed = _eval_process(work, kill_at="failed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _kinds(work) == ["started"]  # killed before "finished"
    assert _ledgers(work) == (2, 1)

    again = _eval_process(work)
    assert again.returncode == 0, again.stderr
    assert _ledgers(work) == (2, 1), "the failed run was executed again"
    assert _kinds(work) == ["started", "finished"]
    [run] = json.loads((work / "out/report.json").read_text())["runs"]

    # As an evaluation that was never killed records it.
    calm = _failing_work(tmp_path / "calm")
    assert _eval_process(calm).returncode == 0
    [expected] = json.loads((calm / "out/report.json").read_text())["runs"]
    for field in ("status", "error", "calls", "answer", "node_visits"):
        assert run["outcome"][field] == expected["outcome"][field], field
    assert run["outcome"]["status"] == "failed"
    assert run["scores"] == expected["scores"] and run["score"] == 0.0


def test_a_resumed_run_that_failed_before_the_kill_is_recorded_not_run_again(
    tmp_path: Path,
) -> None:
    """Killed while the run was under way, the next invocation resumes it (its booking
    replayed, not made again); that resume fails and is killed before `finished`: the
    third invocation records the failure and runs nothing."""
    work = _failing_work(tmp_path / "w")
    first = _eval_process(work, kill_at="answered")
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert _ledgers(work) == (2, 1)

    second = _eval_process(work, kill_at="failed")
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert _ledgers(work) == (3, 1)  # resumed: the model asked again, the booking replayed
    assert _kinds(work) == ["started"]

    third = _eval_process(work)
    assert third.returncode == 0, third.stderr
    assert _ledgers(work) == (3, 1), "the failed run was executed again"
    [run] = json.loads((work / "out/report.json").read_text())["runs"]
    assert run["outcome"]["status"] == "failed"
    assert "the provider is down" in run["outcome"]["error"]
    assert [call["tool"] for call in run["outcome"]["calls"]] == ["book"]


def test_a_run_the_interruption_cancelled_is_resumed_not_recorded(tmp_path: Path) -> None:
    """Ctrl-C journals the run under way `cancelled`, with no result: the next invocation
    goes on with it (its booking replayed, not made again) rather than recording a run the
    user interrupted as a failure of the strategy."""
    work = _failing_work(tmp_path / "w")
    interrupted = _eval_process(work, interrupt_at="answered", provider="up")
    assert interrupted.returncode == 130, interrupted.stderr  # interrupted, as Ctrl-C is
    assert _kinds(work) == ["started"]
    assert _ledgers(work) == (2, 1)

    again = _eval_process(work, provider="up")
    assert again.returncode == 0, again.stderr
    assert _ledgers(work) == (3, 1)  # the model asked again; the booking replayed
    [run] = json.loads((work / "out/report.json").read_text())["runs"]
    assert run["outcome"]["status"] == "completed"
    assert run["outcome"]["answer"] == "booked for you"
    assert [call["tool"] for call in run["outcome"]["calls"]] == ["book"]


# --- 2. a judge's score and the case fields it reads --------------------------------------


def _counting_judge(prompts: list[str]) -> ScriptedModel:
    def reply(request: ModelRequest) -> dict[str, Any]:
        prompts.append(str(request.messages[-1]["content"]))
        return {"text": '{"score": 1, "reason": "fine"}'}

    return ScriptedModel(reply)


def _judged(rubric: str, **case: Any) -> Dataset:
    judge = {"kind": "judge", "rubric": rubric}
    cases = [{"id": "a", "input": "question", "expect": {"answer": {"contains": ["ok"]}}, **case}]
    return Dataset.model_validate({"name": "d", "evaluators": [judge], "cases": cases})


def _evaluate(dataset: Dataset, state: Path, prompts: list[str], *more: Any) -> Any:
    def judge(spec: Any) -> JudgeEvaluator:
        return JudgeEvaluator(
            _counting_judge(prompts), spec.rubric or "", name=spec.evaluator_name()
        )

    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    chosen = [*case_evaluators(dataset.evaluators, judge), *more]
    return asyncio.run(evaluate(dataset, {"s": agent}, state_file=state, evaluators=chosen))


def test_a_judge_reading_only_input_answer_and_expect_is_not_paid_again_for_tags(
    tmp_path: Path,
) -> None:
    state, prompts = tmp_path / "state.jsonl", []
    rubric = "Is {{ answer }} a good answer to {{ input }}, given {{ case.expect.answer }}?"
    _evaluate(_judged(rubric), state, prompts)
    edited = _judged(rubric, tags=["smoke"], metadata={"owner": "qa", "difficulty": "hard"})
    report = _evaluate(edited, state, prompts)
    assert len(prompts) == 1, "the judge was paid again for a tag and metadata edit"
    assert report.summary("s").evaluators["judge"] == 1.0
    _evaluate(_judged(rubric.replace("{{ input }}", "{{ input }}!")), state, prompts)
    assert len(prompts) == 2  # its rubric changed: judged again


def test_a_rubric_reading_the_case_through_a_method_is_scored_again_on_a_tag_edit(
    tmp_path: Path,
) -> None:
    """`case.model_dump_json()` reads every field of the case: a kept score no longer
    stands when a tag the judge saw changed."""
    state, prompts = tmp_path / "state.jsonl", []
    rubric = "Grade {{ answer }} for this case: {{ case.model_dump_json() }}"
    _evaluate(_judged(rubric, tags=["old"]), state, prompts)
    assert len(prompts) == 1 and '"old"' in prompts[0]
    _evaluate(_judged(rubric, tags=["new"]), state, prompts)
    assert len(prompts) == 2, "a judge that saw the tags kept its score after they changed"
    assert '"new"' in prompts[1]


class _Reads:
    """An evaluator of the user's own that says which case fields it reads."""

    def __init__(self, fields: Any) -> None:
        self.name = "mine"
        self.case_fields = fields

    async def __call__(self, case: Any, outcome: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"expect", "tag"}, "'tag'"),  # a typo: no such field
        ("tags", "a str"),  # one string: read as its letters, no field at all
    ],
)
def test_case_fields_naming_no_field_of_a_case_are_refused(fields: Any, named: str) -> None:
    dataset = Dataset.model_validate({"name": "d", "cases": [{"id": "a", "input": "q"}]})
    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    with pytest.raises(UnknownCaseField) as caught:
        Evaluation(dataset, {"s": agent}, [AnswerEvaluator(), _Reads(fields)])
    message = str(caught.value)
    assert "'mine'" in message and named in message and "case_fields" in message
    assert isinstance(caught.value, LoomgraphError | ValueError)


def test_case_fields_naming_fields_of_a_case_are_taken(tmp_path: Path) -> None:
    dataset = Dataset.model_validate({"name": "d", "cases": [{"id": "a", "input": "q"}]})
    agent = Agent("x", model=ScriptedModel(lambda request: {"text": "ok"}))
    mine = _Reads(["metadata", "expect"])  # any iterable of field names
    [run] = asyncio.run(Evaluation(dataset, {"s": agent}, [mine]).run())
    assert run.completed


# --- 3 and 4. per-run caps and agent factories ---------------------------------------------

CASES = (
    "schema_version: 1\nname: two\ncases:\n  - {id: a, input: alpha}\n  - {id: b, input: beta}\n"
)

FACTORY = '''
from pathlib import Path
from loomgraph import Agent
from loomgraph.governance import NoBudget
from loomgraph.models.scripted import ScriptedModel


def answer(request):
    with Path("model.log").open("a") as log:
        log.write("call\\n")
    return {"text": "ok", "usage": {"input_tokens": 5, "output_tokens": 5}}


def make(architecture="react", **options):
    with Path("made.log").open("a") as log:
        log.write(architecture + "\\n")
    return Agent("Be brief.", model=ScriptedModel(answer), architecture=architecture, **options)


class OpaqueBudget(NoBudget):
    """A budget of the user's own: no `config` to add caps to."""


def opaque(**options):
    return make(budget=OpaqueBudget(), **options)
'''


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.yaml").write_text(CASES)
    (tmp_path / "left_factories.py").write_text(FACTORY)
    sys.modules.pop("left_factories", None)
    yield tmp_path
    sys.modules.pop("left_factories", None)


def _caps_command(factory: str, *more: str) -> list[str]:
    return ["eval", "two.yaml", "-a", f"left_factories:{factory}", "--out", "out", "--json", *more]


def test_a_factory_without_a_budget_is_called_once_per_strategy_and_invocation(
    work: Path,
) -> None:
    strategies = ("--architecture", "react", "--architecture", "plan-execute")
    caps = ("--run-max-tokens", "1000", "--concurrency", "1")
    command = _caps_command("make", *strategies, *caps)
    assert main(command) == 0
    assert _count(work / "made.log") == 2  # once per strategy, not twice
    calls = _count(work / "model.log")
    assert len(json.loads((work / "out/report.json").read_text())["runs"]) == 4
    # Run again: one Agent per strategy again, and the kept runs (capped alike) stand.
    assert main(command) == 0
    assert _count(work / "made.log") == 4
    assert _count(work / "model.log") == calls


def test_a_factory_without_a_budget_gets_the_caps_on_the_agent_it_made(work: Path) -> None:
    assert main([*_caps_command("make"), "--run-max-tokens", "1"]) == 0
    assert (work / "made.log").read_text().splitlines() == ["react"]
    report = json.loads((work / "out/report.json").read_text())
    assert [r["outcome"]["status"] for r in report["runs"]] == ["budget_exhausted"] * 2


def test_caps_for_a_budget_of_another_kind_are_refused_and_nothing_stored_is_lost(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_caps_command("opaque")) == 0  # without caps: evaluated, stored
    stored = {name: (work / "out" / name).read_bytes() for name in ("state.jsonl", "report.json")}
    calls = _count(work / "model.log")
    capsys.readouterr()
    assert main([*_caps_command("opaque"), "--run-max-cost", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "RunCapsRefused" in err and "OpaqueBudget" in err
    assert "per-run caps cannot be added" in err
    for name, data in stored.items():
        assert (work / "out" / name).read_bytes() == data, f"{name} changed"
    assert _count(work / "model.log") == calls  # nothing ran


def test_add_run_caps_refuses_a_budget_of_another_kind_and_leaves_it_as_it_was() -> None:
    class Opaque(NoBudget):
        """Limits of its own, which no `config` shows."""

    budget = Opaque()
    agent = Agent("x", name="opaque-agent", model="echo", budget=budget)
    before = agent.deps.budget
    with pytest.raises(RunCapsRefused) as caught:
        add_run_caps(agent, Caps(total_tokens=100))
    assert isinstance(caught.value, LoomgraphError) and isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert "'opaque-agent'" in message and "Opaque" in message
    assert "StandardBudget" in message  # what to do instead
    assert agent.deps.budget is before and agent.deps.budgeted
    assert not hasattr(agent.deps.budget, "config")  # nothing put on it

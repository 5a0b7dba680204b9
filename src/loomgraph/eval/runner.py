"""Run every case under every strategy as ordinary journaled runs; resumable from a state file."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loomgraph.agent.agent import Agent
from loomgraph.agent.result import RunResult
from loomgraph.eval.dataset import Case, Dataset
from loomgraph.eval.evaluators import Evaluator, Score
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.eval.trajectory import CallRecord
from loomgraph.protocols import EffectStatus, UnknownRun, Usage

__all__ = ["EvalRun", "Evaluation", "run_user_id"]

Key = tuple[str, str, int]


@dataclass(slots=True)
class EvalRun:
    """One finished run of a case: what it did and how the evaluators scored it."""

    outcome: CaseOutcome
    scores: list[Score] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The run completed and every evaluator that spoke passed it."""
        return self.outcome.status == "completed" and all(s.passed for s in self.scores)

    @property
    def score(self) -> float:
        """The mean of the evaluators' values (0 when the run did not complete and none spoke)."""
        if not self.scores:
            return 1.0 if self.outcome.status == "completed" else 0.0
        return sum(s.value for s in self.scores) / len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data."""
        return {"outcome": self.outcome.to_dict(), "scores": [s.to_dict() for s in self.scores]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRun:
        """A run from `to_dict()`'s shape."""
        return cls(
            CaseOutcome.from_dict(data["outcome"]), [Score.from_dict(s) for s in data["scores"]]
        )


def run_user_id(dataset: str, key: Key) -> str:
    """The user id a run of an evaluation gets: one per run, so per-user caps cap each run."""
    strategy, case_id, repeat = key
    return f"eval:{dataset}:{strategy}:{case_id}:{repeat}"


class _StateFile:
    """The evaluation's progress as JSON lines: which run each key started, which finished."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started: dict[Key, str] = {}
        self.finished: dict[Key, EvalRun] = {}
        if path is not None and path.exists():
            self._read(path)

    def _read(self, path: Path) -> None:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash: that run is simply done again
            key = (entry["strategy"], entry["case_id"], entry["repeat"])
            if entry["kind"] == "started":
                self.started[key] = entry["run_id"]
            else:
                self.finished[key] = EvalRun.from_dict(entry["run"])

    def write(self, kind: str, key: Key, **data: Any) -> None:
        if self.path is None:
            return
        strategy, case_id, repeat = key
        line = json.dumps(
            {"kind": kind, "strategy": strategy, "case_id": case_id, "repeat": repeat, **data}
        )
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())


class Evaluation:
    """Runs `dataset` under each named Agent (`strategies`), `repeat` times per case, at most
    `concurrency` runs at once. With `state_file`, progress is kept there, so an interrupted
    evaluation continues where it stopped: finished runs are not run again and started ones
    are resumed from the Agent's journal."""

    def __init__(
        self,
        dataset: Dataset,
        strategies: Mapping[str, Agent],
        evaluators: Sequence[Evaluator],
        *,
        repeat: int = 1,
        concurrency: int = 4,
        state_file: str | Path | None = None,
        on_run: Callable[[EvalRun], None] | None = None,
    ) -> None:
        if repeat < 1 or concurrency < 1:
            raise ValueError("repeat and concurrency must be at least 1")
        self.dataset = dataset
        self.strategies = dict(strategies)
        self.evaluators = list(evaluators)
        self.repeat = repeat
        self.concurrency = concurrency
        self.state = _StateFile(None if state_file is None else Path(state_file))
        self.on_run = on_run

    def keys(self) -> list[Key]:
        """Every (strategy, case id, repeat) this evaluation runs, in order."""
        return [
            (name, case.id, r)
            for name in self.strategies
            for case in self.dataset.cases
            for r in range(self.repeat)
        ]

    async def run(self) -> list[EvalRun]:
        """Run what is not finished yet; return every run, in `keys()` order."""
        limit = asyncio.Semaphore(self.concurrency)

        async def one(key: Key) -> None:
            async with limit:
                done = await self._run_one(key)
            self.state.finished[key] = done
            self.state.write("finished", key, run=done.to_dict())
            if self.on_run is not None:
                self.on_run(done)

        todo = [k for k in self.keys() if k not in self.state.finished]
        if self.on_run is not None:
            for key in self.keys():
                if key in self.state.finished:
                    self.on_run(self.state.finished[key])
        await asyncio.gather(*(one(k) for k in todo))
        return [self.state.finished[k] for k in self.keys()]

    async def _run_one(self, key: Key) -> EvalRun:
        strategy, case_id, repeat = key
        agent, case = self.strategies[strategy], self.dataset.case(case_id)
        outcome = CaseOutcome(case_id, strategy, repeat, None, "failed")
        try:
            result = await self._result(agent, case, key)
        except Exception as err:  # a run that raised is scored as a failed run, not fatal
            outcome.error = f"{type(err).__name__}: {err}"
            outcome.run_id = self.state.started.get(key)
        else:
            outcome = await _outcome(agent, case, key, result)
        scores = [s for e in self.evaluators if (s := await e(case, outcome)) is not None]
        return EvalRun(outcome, scores)

    async def _result(self, agent: Agent, case: Case, key: Key) -> RunResult:
        run_id = self.state.started.get(key)
        if run_id is not None:
            try:
                return await agent.resume(run_id)
            except UnknownRun:
                pass  # an in-memory journal forgot it: run the case again
        session = agent.session(
            case.input,
            user_id=run_user_id(self.dataset.name, key),
            session_id=case.session,
        )
        self.state.started[key] = session.run_id
        self.state.write("started", key, run_id=session.run_id)
        result = await session.execute(agent.deps.hooks.on_event)
        if session.error is not None:
            raise session.error
        return result


async def _outcome(agent: Agent, case: Case, key: Key, result: RunResult) -> CaseOutcome:
    effects = await agent.deps.runtime.effects(result.run_id)
    calls = [
        CallRecord(e.intent["call"]["tool"], dict(e.intent["call"].get("args") or {}))
        for e in effects
        if e.kind == "tool" and e.status is not EffectStatus.PENDING
    ]
    output = result.output
    answer = output if isinstance(output, str) or output is None else json.dumps(output)
    strategy, _, repeat = key
    return CaseOutcome(
        case.id,
        strategy,
        repeat,
        result.run_id,
        str(result.status),
        answer,
        calls,
        result.usage if isinstance(result.usage, Usage) else Usage(),
        float(result.timings.get("duration_s", 0.0)),
        dict(result.node_visits),
        result.reason or None if not result.ok else None,
    )

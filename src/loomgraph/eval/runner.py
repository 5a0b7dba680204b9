"""Run every case under every strategy as ordinary journaled runs; resumable from a state file.

The state file keeps, per run (strategy, case, repeat), the run it started and, once scored,
what it did and its scores, each with a fingerprint of what decided it (`fingerprint`): a
run's fingerprint covers the strategy's definition and caps and the case's input and session,
each score's covers the fields of the case its evaluator reads (`case_fields`) and its own
evaluator. Run again, the evaluation reuses a run whose run fingerprint still holds (scoring
it again by the evaluators whose fingerprint changed, that failed on it or, a judge, skipped
it; the others' scores are kept, so adding a check never pays a judge again) and runs a case
again when its run fingerprint changed. A started run with no `finished` entry is recorded
as its journal says it stopped when it stopped with a result (failed, waiting): run again,
a failed run would redo its calls; one still under way, or cancelled by the interruption
before it had a result, is resumed. A reused run that had not ended for good (it waited for
an approval, it failed) is read again from its journal: when it moved on since (approved
and completed), it is scored as it ended. A run started again gets a user id of its own
(the attempt is in it), so nothing per user (memory, budget) carries over from the attempt
it replaces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loomgraph.agent.agent import Agent
from loomgraph.agent.result import RunResult
from loomgraph.eval.dataset import Case, Dataset
from loomgraph.eval.eval_run import EvalRun
from loomgraph.eval.evaluators import Evaluator, Score, check_unique_names, score_run
from loomgraph.eval.fingerprint import (
    case_digest,
    case_fields,
    digest,
    evaluator_digests,
    strategy_fingerprint,
)
from loomgraph.eval.journal import Key, journaled_outcome, outcome_now, raised_outcome
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.protocols import UnknownRun

__all__ = ["EvalRun", "Evaluation", "run_user_id"]

_log = logging.getLogger("loomgraph.eval")


def _escaped(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


def run_user_id(dataset: str, key: Key, attempt: int) -> str:
    """The user id a run of an evaluation gets: one per run, so per-user caps cap each run
    and a run never sees the memory of another, not even of the attempt it replaces.
    `eval:DATASET:STRATEGY:CASE:REPEAT:ATTEMPT` (ATTEMPT: how many runs of the same key
    were started before it), each part with `%` and `:` percent-escaped, so two runs never
    share one (case `fast:x` of strategy `v1` is not case `x` of `v1:fast`)."""
    strategy, case_id, repeat = key
    parts = (dataset, strategy, case_id, str(repeat), str(attempt))
    return "eval:" + ":".join(_escaped(p) for p in parts)


@dataclass(slots=True)
class _Started:
    run_id: str
    fingerprint: str | None


@dataclass(slots=True)
class _Finished:
    run: EvalRun
    run_fingerprint: str | None
    # Per evaluator name (None in a file written before them: every score is done again).
    score_fingerprints: dict[str, str] | None


class _StateFile:
    """The evaluation's progress as JSON lines: which run each key started, which finished,
    each with the fingerprints of what decided it (None in a file written before them).

    A last line with no newline was torn by a crash (each entry is written with its newline
    in one write): it is read when it is a whole entry, and before the next entry is
    appended it is ended with its newline, or cut off when it is not one, so the next entry
    starts a line of its own. A line that is not an entry is logged (`loomgraph.eval`), never
    skipped silently: the run it stood for is done again."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started: dict[Key, _Started] = {}
        self.finished: dict[Key, _Finished] = {}
        self.attempts: Counter[Key] = Counter()  # runs started per key, each its own user
        # How to end a torn last line before the first append: cut the file to this size,
        # or (True) write the newline it lacks.
        self._torn: int | bool | None = None
        if path is not None and path.exists():
            self._read(path)

    def _read(self, path: Path) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with its newline
        for number, line in enumerate(lines, start=1):
            if line.strip() and not self._entry(line):
                _log.warning(
                    "%s: line %d is not an entry of an evaluation's state; ignored (the run "
                    "it stood for is done again)",
                    path,
                    number,
                )
        if tail.strip():
            if self._entry(tail):
                self._torn = True
            else:
                self._torn = len(data) - len(tail)
                _log.warning(
                    "%s: line %d, its last, was torn by a crash (%d bytes, no newline); it is "
                    "cut off before the next entry is written, and the run it stood for is "
                    "done again",
                    path,
                    len(lines) + 1,
                    len(tail),
                )

    def _entry(self, line: bytes) -> bool:
        """Take in one line; False when it is not an entry."""
        try:
            entry = json.loads(line)
            key = (entry["strategy"], entry["case_id"], entry["repeat"])
            if entry["kind"] == "started":
                self.started[key] = _Started(entry["run_id"], entry.get("run_fingerprint"))
                self.attempts[key] += 1
            else:
                scored = entry.get("score_fingerprints")
                self.finished[key] = _Finished(
                    EvalRun.from_dict(entry["run"]),
                    entry.get("run_fingerprint"),
                    scored if isinstance(scored, dict) else None,  # else: every score again
                )
        except (ValueError, KeyError, TypeError):
            return False
        return True

    def write(self, kind: str, key: Key, **data: Any) -> None:
        if self.path is None:
            return
        strategy, case_id, repeat = key
        # No NaN or infinity: a line holding one would be no JSON to any other reader.
        line = json.dumps(
            {"kind": kind, "strategy": strategy, "case_id": case_id, "repeat": repeat, **data},
            allow_nan=False,
        )
        with self.path.open("a", encoding="utf-8") as file:
            if self._torn is True:
                line = "\n" + line
            elif self._torn is not None:
                file.truncate(self._torn)
            self._torn = None
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())


def _name(evaluator: Evaluator) -> str:
    """The name an evaluator's scores go under."""
    return str(getattr(evaluator, "name", type(evaluator).__name__))


def _read_as_before(
    kept: _Finished, case: Case, evaluators: Mapping[str, str], scored: Mapping[str, str]
) -> None:
    """Take a kept score fingerprint made over the whole case (before evaluators named the
    fields they read) as the one over its fields now, when the whole case is as it was then:
    an upgrade does not score every kept run again (a judge's are paid calls)."""
    old = kept.score_fingerprints
    if not old:
        return
    whole = case_digest(case)
    for name, own in evaluators.items():
        if old.get(name) == digest([whole, own]) and name in scored:
            old[name] = scored[name]


def _stale(kept: _Finished, scored: Mapping[str, str]) -> set[str]:
    """The evaluators (of `scored`, each name's score fingerprint) whose kept score, or lack
    of one, no longer stands for the kept run: their fingerprint changed, or they failed on
    it or (a judge) skipped it."""
    old = kept.score_fingerprints or {}
    redo = {s.evaluator for s in kept.run.scores if s.error or s.skipped}
    return {name for name, fingerprint in scored.items() if old.get(name) != fingerprint} | redo


def _scores_hold(kept: _Finished, run_fingerprint: str, scored: Mapping[str, str]) -> bool:
    """Whether a kept run's scores still stand for it: its run fingerprint holds, no score
    is stale (`_stale`) and none is of an evaluator no longer in the evaluation."""
    return (
        kept.run_fingerprint == run_fingerprint
        and not _stale(kept, scored)
        and all(s.evaluator in scored for s in kept.run.scores)
    )


class Evaluation:
    """Runs `dataset` under each named Agent (`strategies`), `repeat` times per case, at most
    `concurrency` runs at once. With `state_file`, progress is kept there, so an interrupted
    evaluation continues where it stopped: finished runs are not run again and started ones
    are resumed from the Agent's journal. What changed since is done again (see the module's
    docstring): a run whose strategy (its caps too), input or session changed is run again;
    one whose case or evaluators changed, that an evaluator failed on or a judge skipped, is
    scored again; one that had not ended for good is read again from its journal.
    ValueError when `strategies` is empty, DuplicateEvaluatorName when two evaluators share
    a name, UnknownCaseField when an evaluator's `case_fields` names no field of a case."""

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
        if not strategies:
            # An empty report would pass every gate: a filter that matched no strategy
            # must not read as a green CI run.
            raise ValueError("an evaluation needs at least one strategy; none was given")
        check_unique_names(evaluators)
        # The case fields each evaluator's scores depend on, checked before anything runs.
        self._reads = {_name(e): case_fields(e) for e in evaluators}
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
        """Run what is not finished yet (or no longer fits its fingerprints); return every
        run, in `keys()` order."""
        limit = asyncio.Semaphore(self.concurrency)
        fingerprints = {name: strategy_fingerprint(a) for name, a in self.strategies.items()}
        evaluators = evaluator_digests(self.evaluators, self.dataset.evaluators)
        cases = {case.id: case for case in self.dataset.cases}

        def run_fingerprint(key: Key) -> str:
            case = cases[key[1]]
            return digest([fingerprints[key[0]], case.input, case.session])

        def score_fingerprints(key: Key) -> dict[str, str]:
            case = cases[key[1]]
            return {
                name: digest([case_digest(case, self._reads.get(name)), own])
                for name, own in evaluators.items()
            }

        for key, kept in self.state.finished.items():
            if key[1] in cases:
                _read_as_before(kept, cases[key[1]], evaluators, score_fingerprints(key))

        def current(key: Key) -> bool:
            kept = self.state.finished.get(key)
            return (
                kept is not None
                and kept.run.ended  # one that had not is read again from its journal
                and _scores_hold(kept, run_fingerprint(key), score_fingerprints(key))
            )

        async def one(key: Key) -> None:
            fingerprint, scored = run_fingerprint(key), score_fingerprints(key)
            async with limit:
                done = await self._run_one(key, fingerprint, scored)
            kept = self.state.finished.get(key)
            if kept is not None and done is kept.run:  # read again, unchanged: kept as it is
                if self.on_run is not None:
                    self.on_run(done)
                return
            self.state.finished[key] = _Finished(done, fingerprint, scored)
            self.state.write(
                "finished",
                key,
                run=done.to_dict(),
                run_fingerprint=fingerprint,
                score_fingerprints=scored,
            )
            if self.on_run is not None:
                self.on_run(done)

        todo = [k for k in self.keys() if not current(k)]
        if self.on_run is not None:
            for key in self.keys():
                if current(key):
                    self.on_run(self.state.finished[key].run)
        await asyncio.gather(*(one(k) for k in todo))
        return [self.state.finished[k].run for k in self.keys()]

    async def _run_one(self, key: Key, fingerprint: str, scored: dict[str, str]) -> EvalRun:
        """Score the run of `key`: the one kept when it still fits `fingerprint` (as its
        journal has it now when it had not ended for good; when it had not moved on, scored
        again only by its stale evaluators), else the run resumed or started now, read from
        its journal."""
        strategy, case_id, _ = key
        agent, case = self.strategies[strategy], self.dataset.case(case_id)
        kept = self.state.finished.get(key)
        if kept is not None and kept.run_fingerprint == fingerprint:
            outcome = kept.run.outcome
            if not kept.run.ended:
                outcome = await outcome_now(agent, case, key, outcome)
            if outcome is kept.run.outcome:
                if _scores_hold(kept, fingerprint, scored):
                    return kept.run
                return EvalRun(outcome, await self._rescored(case, kept, scored))
        else:
            outcome = await self._outcome(agent, case, key, fingerprint)
        return EvalRun(outcome, await score_run(self.evaluators, case, outcome))

    async def _rescored(
        self, case: Case, kept: _Finished, scored: Mapping[str, str]
    ) -> list[Score]:
        """The kept run's scores, those of its stale evaluators (`_stale`) given again and
        those of evaluators no longer in the evaluation dropped, in the evaluators' order."""
        stale = _stale(kept, scored)
        names = [_name(e) for e in self.evaluators]
        redo = [e for e, name in zip(self.evaluators, names, strict=True) if name in stale]
        fresh = await score_run(redo, case, kept.run.outcome)
        by_name = {s.evaluator: s for s in kept.run.scores if s.evaluator not in stale}
        by_name.update((s.evaluator, s) for s in fresh)
        return [by_name[name] for name in names if name in by_name]

    async def _outcome(self, agent: Agent, case: Case, key: Key, fingerprint: str) -> CaseOutcome:
        try:
            result = await self._result(agent, case, key, fingerprint)
        except Exception as err:
            # A run that raised is scored as a failed run, not fatal, and from its journal:
            # what it executed before it raised counts (a safety evaluator must see it).
            started = self.state.started.get(key)
            run_id = started.run_id if started and started.fingerprint == fingerprint else None
            return await raised_outcome(agent, case, key, run_id, err)
        return await journaled_outcome(agent, case, key, result)

    async def _result(self, agent: Agent, case: Case, key: Key, fingerprint: str) -> RunResult:
        started = self.state.started.get(key)
        if started is not None and started.fingerprint == fingerprint:
            record = await agent.deps.runtime.load_run(started.run_id)
            if record is not None and record.result is not None and not record.status.in_progress:
                # It returned (its scores were lost): scored as it returned, as when the
                # evaluation went on. Resumed, a failed run would be tried again: calls
                # this evaluation never made. A run with no result (still `running` after
                # a crash, `cancelled` by the interruption, Ctrl-C) stopped before its end:
                # resumed, its journaled calls replayed.
                return RunResult.from_dict(record.result)
            try:
                return await agent.resume(started.run_id)
            except UnknownRun:
                del self.state.started[key]  # an in-memory journal forgot it: run it again
        # A run started again replaces an earlier attempt (edited, failed to resume): a user
        # id of its own keeps it from the memory and the per-user ledger of that attempt.
        attempt = self.state.attempts[key]
        user_id = run_user_id(self.dataset.name, key, attempt)
        session = agent.session(case.input, user_id=user_id, session_id=case.session)
        self.state.started[key] = _Started(session.run_id, fingerprint)
        self.state.attempts[key] += 1
        self.state.write(
            "started",
            key,
            run_id=session.run_id,
            run_fingerprint=fingerprint,
            attempt=attempt,
            user_id=user_id,
        )
        result = await session.execute(agent.deps.hooks.on_event)
        if session.error is not None:
            raise session.error
        return result

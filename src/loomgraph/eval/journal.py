"""What a run of a case did, read from the agent's journal: its outcome for the evaluators."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from loomgraph.agent.agent import Agent
from loomgraph.agent.recovery import crashed_usage
from loomgraph.agent.result import RunResult, failed_step_usage
from loomgraph.eval.cases import Case
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.eval.trajectory import CallRecord
from loomgraph.protocols import EffectRecord, EffectStatus, RunStatus, Transition, Usage
from loomgraph.protocols.paths import journaled_usage, top_level

__all__ = ["Key", "executed_calls", "journaled_outcome", "outcome_now", "raised_outcome"]

Key = tuple[str, str, int]  # (strategy, case id, repeat)

# A tool effect begun with no outcome journaled: the call may or may not have run.
_UNSETTLED = frozenset({EffectStatus.PENDING, EffectStatus.UNKNOWN_AFTER_CRASH})


def executed_calls(effects: Sequence[EffectRecord]) -> list[CallRecord]:
    """The tool calls a run executed, in journal order: every tool call journaled as begun.
    One with no outcome (pending: the run stopped during it; or unknown after a crash) may
    have run, so it counts, marked `uncertain`: a safety check must not miss it."""
    return [
        CallRecord(
            e.intent["call"]["tool"],
            dict(e.intent["call"].get("args") or {}),
            uncertain=e.status in _UNSETTLED,
        )
        for e in effects
        if e.kind == "tool"
    ]


async def journaled_outcome(agent: Agent, case: Case, key: Key, result: RunResult) -> CaseOutcome:
    """The outcome of a run that ended with `result`: its calls from the journal."""
    effects = await agent.deps.runtime.effects(result.run_id)
    output = result.output
    # As written, not ASCII-escaped: a check that the answer contains `Zürich` must see it.
    answer = (
        output
        if isinstance(output, str) or output is None
        else json.dumps(output, ensure_ascii=False)
    )
    strategy, _, repeat = key
    return CaseOutcome(
        case.id,
        strategy,
        repeat,
        result.run_id,
        str(result.status),
        answer,
        executed_calls(effects),
        result.usage if isinstance(result.usage, Usage) else Usage(),
        float(result.timings.get("duration_s", 0.0)),
        dict(result.node_visits),
        result.reason or None if not result.ok else None,
    )


async def raised_outcome(
    agent: Agent, case: Case, key: Key, run_id: str | None, error: Exception
) -> CaseOutcome:
    """The outcome of a run that raised `error`, as its journal has it: as a finished run's
    when it was journaled as ended (an answer that did not fit its schema), else what it
    executed and was charged up to where it stopped. Never `completed`. A journal that
    cannot be read raises: what the run did is then unknown, and is not scored as nothing."""
    strategy, _, repeat = key
    why = f"{type(error).__name__}: {error}"
    runtime = agent.deps.runtime
    record = None if run_id is None else await runtime.load_run(run_id)
    if run_id is None or record is None:  # it raised before it was journaled: it ran nothing
        return CaseOutcome(case.id, strategy, repeat, run_id, "failed", error=why)
    if record.result is not None:
        outcome = await journaled_outcome(agent, case, key, RunResult.from_dict(record.result))
    else:
        transitions, effects = await runtime.transitions(run_id), await runtime.effects(run_id)
        usage = journaled_usage(transitions)
        # A crash charge of a model call whose answer was journaled is left out only when a
        # journaled step counts that answer: the run may have raised before replaying it.
        counted = _answers_counted(run_id, transitions, effects)
        crashed = await crashed_usage(agent.deps, run_id, replayed=counted, effects=effects)
        usage += failed_step_usage(error) + crashed
        latency = max(transitions[-1].at - record.created_at, 0.0) if transitions else 0.0
        outcome = CaseOutcome(
            case.id,
            strategy,
            repeat,
            run_id,
            str(record.status),
            None,
            executed_calls(effects),
            usage,
            latency,
            dict(Counter(t.node for t in top_level(transitions))),
        )
    status = RunStatus(outcome.status)
    if status is RunStatus.COMPLETED or status.in_progress:
        outcome.status = str(RunStatus.FAILED)
    outcome.error = why
    return outcome


def _answers_counted(
    run_id: str, transitions: Sequence[Transition], effects: Sequence[EffectRecord]
) -> set[str]:
    """The keys of the effects whose outcomes the run's journaled top-level steps count: a
    step of node `n` at visit `v` carries what its own effects (`run:n:v:…`) and its child
    graphs' (`run:n.v/…`) used. (A child graph's own step is not looked at: its charge is
    counted, which may count a call twice, never miss one.)"""
    steps = top_level(transitions)
    prefixes = tuple(
        prefix
        for t in steps
        for prefix in (f"{run_id}:{t.node}:{t.visit}:", f"{run_id}:{t.node}.{t.visit}/")
    )
    return {e.key for e in effects if prefixes and e.key.startswith(prefixes)}


async def outcome_now(agent: Agent, case: Case, key: Key, kept: CaseOutcome) -> CaseOutcome:
    """A kept outcome of a run that had not ended for good, as the run's journal has it now:
    the journal's when the run stopped since with another result (approved and completed,
    answered, resumed after a failure), else `kept` itself, the same object: when the
    journal's result is the one it was read from, when the run is under way again, or when
    the journal no longer knows it (an in-memory one)."""
    if kept.run_id is None:  # it raised before it was journaled
        return kept
    record = await agent.deps.runtime.load_run(kept.run_id)
    if record is None or record.result is None or record.status.in_progress:
        return kept
    now = await journaled_outcome(agent, case, key, RunResult.from_dict(record.result))
    # What the run did, not how it was read: a run that raised was kept as `failed` with
    # its error, from this same result.
    unchanged = _what_it_did(now) == _what_it_did(kept)
    return kept if unchanged else now


def _what_it_did(outcome: CaseOutcome) -> dict[str, object]:
    data = outcome.to_dict()
    del data["status"], data["error"]
    return data

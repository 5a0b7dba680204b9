"""Dead letters: a run whose recoveries keep failing is set aside instead of resumed forever.

Every resume of a run that crashed, failed or was cancelled counts one recovery in the
journal (`runs.recoveries`) before it goes on. A resume that finds `max_recoveries` of them
already counted makes the run `dead_letter` (with the last error as its reason) and runs
nothing; a dead letter is resumed only by an operator's `retry`, which forgets the count.
A recovery that goes on to wait for a person (an approval, an `interrupt` value) succeeded:
the count is forgotten then too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from loomgraph.agent.checkpoints import ResumeError
from loomgraph.agent.result import RunResult
from loomgraph.agent.run_ending import end_aside, end_clock, restore_entries
from loomgraph.engine.attempts import MODEL_EFFECT
from loomgraph.engine.effects import TOOL_EFFECT
from loomgraph.governance.crash_charges import charged_usage
from loomgraph.governance.ledger import Charge
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import (
    AuditAction,
    AuditLog,
    AuditMode,
    Deps,
    EffectRecord,
    EffectStatus,
    RunRecord,
    RunStatus,
    Usage,
    semconv,
)

# The statuses a resume recovers from (not final, not waiting for an answer).
RECOVERED = frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED})


class RunDeadLettered(ResumeError):
    """The run is a dead letter: it is resumed only by `agent.retry` / `runs retry`."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(
            f"run {record.run_id} is a dead letter ({record.reason}); retry it with "
            f"agent.retry({record.run_id!r}) or `loomgraph runs retry {record.run_id}`"
        )
        self.run_id = record.run_id
        self.reason = record.reason


async def begin_recovery(
    deps: Deps, record: RunRecord, limit: int, graph: CompiledGraph, agent_name: str
) -> RunResult | None:
    """Count a recovery of `record` (read under its lease, which the caller holds); the
    dead-letter result instead when `limit` recoveries failed already, the run then closed
    (`close_dead_letter`, `graph` and `agent_name` its span's). A journal that counts none
    is never given up on. Both are audited (`crash_recovered`; `dead_letter`, kept with the
    end: `end_aside`). A dead letter is refused (`RunDeadLettered`), once what its journal
    kept (its end's entry, when a crash came before the log had it) is written and its
    clock ended again (a crash right after its end may have cut its close off)."""
    runtime: Any = deps.runtime
    if record.status == RunStatus.DEAD_LETTER:
        await restore_entries(deps, record)
        await end_clock(deps, record)
        raise RunDeadLettered(record)
    count = getattr(runtime, "record_recovery", None)
    if record.status not in RECOVERED or count is None:
        return None
    # As found: an in-memory journal updates this very record.
    found = (str(record.status), record.recoveries, record.reason)
    if record.recoveries < limit:
        counted = await count(record.run_id)
        await _audit(deps.audit_log, AuditAction.CRASH_RECOVERED, record, found, int(counted))
        return None
    last = record.reason or "the worker died during the recovery; no error was journaled"
    reason = f"gave up after {record.recoveries} failed recoveries; last: {last}"
    # No answer, said as every other status without one says it: the empty output.
    result = RunResult(
        "", record.run_id, record.session_id, record.user_id, RunStatus.DEAD_LETTER, reason
    )
    payload = _payload(AuditMode.of(deps.audit_log), found, found[1])
    entry = None if payload is None else (AuditAction.DEAD_LETTER, _ACTOR, payload)
    await end_aside(deps, record, RunStatus.DEAD_LETTER, reason, result.to_dict(), entry)
    await close_dead_letter(deps, record, graph, agent_name)
    return result


async def close_dead_letter(
    deps: Deps, record: RunRecord, graph: CompiledGraph, agent_name: str
) -> None:
    """What a run just given up on still owes, under its lease (its clock was ended with its
    end, `end_aside`): a run span, an error, so traces and metrics count it (once: a dead
    letter found again ends its clock only)."""
    attributes = semconv.run_attributes(
        run_id=record.run_id,
        graph_name=graph.name,
        graph_hash=graph.hash,
        session_id=record.session_id,
        user_id=record.user_id,
        parent_run_id=record.parent_run_id,
        agent_name=agent_name,
        model=deps.model,
    )
    ended = semconv.run_end_attributes(RunStatus.DEAD_LETTER)
    with deps.telemetry.span(semconv.RUN_SPAN, {**attributes, **ended}) as span:
        trace = record.initial.trace if record.initial else None
        semconv.link_span(span, trace, semconv.LinkKind.RUN_START)  # nothing runs: the end


# The stops where a run waits for a person: reaching one is progress, not a failure.
WAITING = frozenset({RunStatus.AWAITING_APPROVAL, RunStatus.INTERRUPTED})


async def end_recovery(runtime: Any, record: RunRecord, result: RunResult) -> None:
    """Forget the failed recoveries of a run that went on to wait for a person, so a run
    that waits legitimately (perhaps for days, through later crashes) does not drift
    toward `dead_letter`."""
    reset = getattr(runtime, "reset_recoveries", None)
    if reset is not None and result.status in WAITING:
        await reset(record.run_id)


_ACTOR = "runtime"  # of the recovery entries


async def _audit(
    audit_log: AuditLog,
    action: AuditAction,
    record: RunRecord,
    found: tuple[str, int, str],
    recoveries: int,
) -> None:
    """A recovery entry (`_payload`), written to the log at once; the effects the run left
    unknown follow as entries of their own."""
    payload = _payload(AuditMode.of(audit_log), found, recoveries)
    if payload is not None:
        await audit_log.record(
            action, run_id=record.run_id, user_id=record.user_id, actor=_ACTOR, payload=payload
        )


def _payload(
    mode: AuditMode, found: tuple[str, int, str], recoveries: int
) -> dict[str, Any] | None:
    """The payload of a recovery entry (None: nothing is audited): the status the run was
    found in, how often it was recovered, and (with content capture: an error's message may
    quote what the run handled) its last journaled error."""
    if not mode.enabled:
        return None
    payload: dict[str, Any] = {"status": found[0], "recoveries": recoveries}
    if mode.content:
        payload["reason"] = found[2]
    return payload


async def reset_recoveries(runtime: Any, run_id: str) -> None:
    """Forget a run's failed recoveries; a dead letter becomes a failed run again, which a
    resume recovers."""
    record = await runtime.load_run(run_id)
    reset = getattr(runtime, "reset_recoveries", None)
    if record is None or reset is None:
        return
    await reset(run_id)
    if record.status == RunStatus.DEAD_LETTER:
        await runtime.finish_run(run_id, RunStatus.FAILED, record.reason, record.result)


async def crashed_usage(
    deps: Deps,
    run_id: str,
    *,
    replayed: Collection[str] = (),
    effects: Sequence[EffectRecord] | None = None,
) -> Usage:
    """What the run's crashed attempts were charged when it was opened again (at their
    reservations, see `governance.crash_charges`) that its usage counts nowhere else; zero
    for a budget that does not charge.

    A charge names the execution of the effect its hold was for. One whose effect ended
    `done` in that same execution (its outcome was journaled, the process died before the
    settle) is left out when that outcome counts it: a tool call's always (a tool call that
    ran counts in no usage but the ledger's), a model call's once the run replayed its answer
    (`replayed`: the keys of the answers the run's usage counts, `RunScope.replayed` of the
    run that ends). Every other charge is counted: its effect ran
    again, its outcome is unknown, or its hold named no effect (a node visit, an older
    ledger's row). The journal's effects (`effects`, else read here) are read only when a
    charge names one."""
    budget = deps.budget if deps.budgeted else None
    charges_of = getattr(budget, "charges", None)
    if charges_of is None:  # a budget that keeps no charges of its own: its total, if any
        read = getattr(budget, "crashed_usage", None)
        return Usage() if read is None else await read(run_id)
    charges = await charges_of(run_id)
    if any(getattr(charge, "effect", None) is not None for charge in charges):
        if effects is None:
            effects = await deps.runtime.effects(run_id)
        done = {e.key: e for e in effects if e.status == EffectStatus.DONE}
        charges = [c for c in charges if not _counted_elsewhere(c, done, replayed)]
    return charged_usage(charges)


def _counted_elsewhere(
    charge: Charge, done: Mapping[str, EffectRecord], replayed: Collection[str]
) -> bool:
    """Whether a crash charge's effect ended `done` in the execution the hold was for, with
    its outcome counted where it was journaled (see `crashed_usage`)."""
    effect = getattr(charge, "effect", None)
    record = None if effect is None else done.get(effect.key)
    if effect is None or record is None or record.attempts != effect.execution:
        return False
    return record.kind == TOOL_EFFECT or (record.kind == MODEL_EFFECT and effect.key in replayed)

"""How a session ends a run: the `RunResult` of the interpreter's outcome, the run's span
told how the run ended, the end journaled with its `run_completed` entry kept beside it
(`journal_end`), a run its caller cancelled journaled and audited as cancelled, and what an
outage or a crash cut off a finished run's end done at its resume (`restore_ended`). The end
of a run no session runs (a resume giving it up, a fleet worker cancelling it) is journaled
and audited the same way, its entry kept with it (`end_aside`, `cancel_aside`).

Each takes what it reads of the session as arguments (the run's span, when the run started,
the agent's `output_schema` step), and `AgentSession` calls each once where it needs it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from loomgraph.agent.leases import hold_lease, lease_stop
from loomgraph.agent.result import RunResult
from loomgraph.agent.run_episode import owed_episode, pay_episode
from loomgraph.engine import audit_trail as trail
from loomgraph.engine.audit_writer import AuditWriter, Kept, keep_unwritten, restore_kept
from loomgraph.engine.interpreter import Outcome
from loomgraph.engine.scope import EventSink, RunScope
from loomgraph.graph.state import final_output
from loomgraph.nodes.structured import FinishNode, OutputValidationError
from loomgraph.protocols import (
    AuditAction,
    AuditEntry,
    AuditMode,
    AuditOutbox,
    BudgetScope,
    Deps,
    Episode,
    RunRecord,
    RunStatus,
    Runtime,
    Span,
    Usage,
    finished,
    semconv,
)
from loomgraph.runtime.audit_outbox import EndEntries, end_entries, refused_fences
from loomgraph.runtime.errors import JournalEncodingError, RunConflict

__all__ = [
    "AuditFence",
    "cancel_aside",
    "cancelled",
    "end_aside",
    "ended_entry",
    "journal_end",
    "journal_result",
    "lease_lost",
    "outcome_result",
    "restore_ended",
    "restore_entries",
    "traced",
]


def lease_lost() -> bool:
    """Whether the lease the current task holds was lost (another worker took the run
    over): its lease holder stopped it with a `RunConflict` (`lease_stop`)."""
    return isinstance(lease_stop(), RunConflict)


class AuditFence:
    """A run's audit writer fenced as its journal writes are: it halts (writes and keeps
    nothing more) once the run's lease is lost, as soon as the run's task can know it: its
    lease holder stopped it (`lease_lost`), or a journal refused one of its writes (noted in
    `refused_fences` as the `LeaseLost` is raised, before it makes its way out through code
    that audits on the way, as a tool call's settlement). What the log took before cannot be
    taken back; an append under way is not called back."""

    def __init__(self, scope: RunScope) -> None:
        self.run_id = scope.run_id
        self._refused: set[str] = set()
        self._token = refused_fences.set(self._refused)
        self.writer: AuditWriter | None = None
        if scope.auditing:
            deps = scope.deps
            self.writer = AuditWriter(
                deps.audit_log, scope.run_id, scope.user_id, fenced_out=self.lost
            )
            scope.audit_writer = self.writer

    def lost(self) -> bool:
        """Whether the run's lease is known lost, in the asking task's context."""
        return self.run_id in self._refused or lease_lost()

    def close(self, lost: bool) -> None:
        """The run's body is over (in the task that made this): the writer halts when the
        lease was lost (`lost`: the run ended with `LeaseLost`, or a refusal was noted)."""
        refused_fences.reset(self._token)
        if self.writer is not None and (lost or self.lost()):
            self.writer.halt()


def ended_entry(
    scope: RunScope, result: RunResult, error: BaseException | None
) -> dict[str, Any] | None:
    """The payload of the run's `run_completed` entry (None: the run audits nothing)."""
    if not scope.auditing:
        return None
    return trail.run_completed(
        result.status,
        result.reason,
        result.usage,
        output=result.output,
        content=scope.audit_content,
        error=error,
    )


async def journal_end(
    scope: RunScope,
    status: RunStatus,
    reason: str,
    result: dict[str, Any] | None,
    ended: dict[str, Any] | None,
) -> None:
    """Journal how the run ended (`finish_run`, fenced) and then audit it: its
    `run_completed` entry `ended` (None: the run audits nothing) is kept in the journal's
    audit outbox in the same transaction (`audit_outbox.end_entries`), then queued for the
    log marked kept, so the session lets go of it once the log has it (`keep_unwritten`).
    A crash in between leaves it kept: the resume writes it (`restore_ended` for a finished
    run; `restore_kept` before the `run_started` of a run that goes on). A journal that
    keeps none (not an `AuditOutbox`) journals the end alone; the entry is queued as before.
    A refused end (`LeaseLost`, `RunFinished`) keeps and audits nothing."""
    runtime = scope.deps.runtime
    if ended is None:
        await runtime.finish_run(scope.run_id, status, reason, result)
        return
    entry: AuditEntry = (AuditAction.RUN_COMPLETED, trail.RUN_ACTOR, ended)
    kept = await _finish_keeping(runtime, scope.run_id, status, reason, result, entry)
    scope.writer().add(*entry, kept)


async def journal_result(
    scope: RunScope, result: RunResult, error: BaseException | None
) -> dict[str, Any]:
    """Journal the run's `result` as its end with its `run_completed` entry (`journal_end`);
    the result's data as journaled. An answer that is not plain JSON (a node wrote NaN to
    `output`; the journal refused that visit, so the run failed) ends the run without it,
    never `running`."""
    try:
        return await _journal_result(scope, result, error)
    except JournalEncodingError:
        result.output = None
        return await _journal_result(scope, result, error)


async def _journal_result(
    scope: RunScope, result: RunResult, error: BaseException | None
) -> dict[str, Any]:
    data = result.to_dict()
    ended = ended_entry(scope, result, error)
    await journal_end(scope, result.status, result.reason, data, ended)
    return data


async def _finish_keeping(
    runtime: Runtime,
    run_id: str,
    status: RunStatus,
    reason: str,
    result: dict[str, Any] | None,
    entry: AuditEntry,
) -> Kept:
    """`finish_run`, `entry` kept beside it in the journal's audit outbox, in the same
    transaction (`audit_outbox.end_entries`); whether the journal kept it."""
    end = EndEntries(run_id, (entry,))
    token = end_entries.set(end)
    try:
        await runtime.finish_run(run_id, status, reason, result)
    finally:
        end_entries.reset(token)
    return Kept.ALREADY if end.kept else Kept.NOT_YET


async def end_aside(
    deps: Deps,
    record: RunRecord,
    status: RunStatus,
    reason: str,
    result: dict[str, Any] | None,
    entry: AuditEntry | None,
) -> None:
    """Journal the end of a run no session runs (a resume giving it up, a fleet worker
    cancelling it), under the run's lease, which the caller holds, audited as a session's
    end is (`journal_end`): the entries the journal kept for the run before go to the log
    first (`restore_kept`: the outbox lets go of its oldest first, and the trail keeps its
    order), then the end, `entry` kept beside it, then `entry` to the log, and let go of.
    A crash in between leaves it kept, for whatever looks at the run next (`restore_ended`,
    `restore_entries`, or the resume of a run that goes on). An outage of the log before the
    end is raised, nothing ended (as a session's end waits for its entries); after it, the
    entry stays kept. `entry` None, or no audit: the end alone. Then the run's budget clock
    is ended (`end_clock`)."""
    runtime, run_id = deps.runtime, record.run_id
    if entry is None or not AuditMode.of(deps.audit_log).enabled:
        await runtime.finish_run(run_id, status, reason, result)
    else:
        writer = AuditWriter(deps.audit_log, run_id, record.user_id, fenced_out=lease_lost)
        try:
            await restore_kept(writer, runtime)
            kept = await _finish_keeping(runtime, run_id, status, reason, result, entry)
            writer.add(*entry, kept)
            await writer.written()
        finally:  # what the log took is let go of; what it did not stays kept, once
            await keep_unwritten(writer, runtime)
    # What a crashed attempt of the run still holds is closed as its resume would close it;
    # else a run cancelled or given up after a crash held its user's room for good.
    await end_clock(deps, record)


ENDED_ASIDE = frozenset({RunStatus.CANCELLED, RunStatus.DEAD_LETTER})
"""The ends `end_aside` journals for runs no session runs: their clocks it ends."""


async def end_clock(deps: Deps, record: RunRecord) -> None:
    """End the budget clock of a run ended aside (given up, cancelled), under its lease: at
    its end, and again whenever it is found (a refused resume, a fleet worker's repair),
    since nothing tells whether a crash cut it off. The holds its crashed attempt left are
    closed (`StandardBudget.begin_run`: an effect's charged, a visit's given back). Ending an
    ended clock changes nothing: no hold is left to close, and the clock it records again is
    forgotten at once."""
    clock = deps.run_clock
    if clock is not None:
        scope = BudgetScope(record.run_id, record.user_id)
        await clock.begin_run(scope, started_at=record.created_at)
        await clock.end_run(scope)


async def cancel_aside(deps: Deps, record: RunRecord, reason: str) -> None:
    """Journal a run no session runs `cancelled` for `reason` under its lease (a fleet
    worker that finds a cancel request), audited as a session's cancel is (`cancelled`); a
    run that never started (`queued`: no `run_started` either) audits nothing. A stopped
    run's result is kept cancelled, with nothing pending."""
    started = record.status != RunStatus.QUEUED
    entry = (AuditAction.RUN_COMPLETED, trail.RUN_ACTOR, _cancelled_entry(reason))
    result = record.result
    if result is not None:  # a stop's: what it waited for is over; its output and usage stay
        stopped = RunResult.from_dict(result)
        ended = replace(stopped, status=RunStatus.CANCELLED, reason=reason, pending=None)
        result = ended.to_dict()
    await end_aside(deps, record, RunStatus.CANCELLED, reason, result, entry if started else None)


def traced(scope: RunScope, span: Span | None, attributes: dict[str, Any]) -> None:
    """Tell the run's span how the run ended (when the run is traced)."""
    if scope.tracing and span is not None:
        semconv.set_attributes(span, attributes)


async def cancelled(scope: RunScope, span: Span | None, reason: str) -> None:
    """Journal the run as cancelled for `reason` (`CancelReason`) — unless the cancel was
    not the caller's but the run's lease holder's (`lease_stop`): the lease may be lost, or
    the journal out of reach, so nothing is journaled and the run stays `running`, as a
    crash leaves it, for a resume (a fleet worker) to recover. The caller gets `LeaseLost`
    or `JournalUnavailable` from the lease holder."""
    if lease_stop() is not None:
        return
    traced(scope, span, semconv.run_end_attributes(RunStatus.CANCELLED))
    # To its end even when the caller cancels again: else the run stays `running`.
    await finished(_journal_cancelled(scope, reason))


async def _journal_cancelled(scope: RunScope, reason: str) -> None:
    ended = _cancelled_entry(reason) if scope.auditing else None
    await journal_end(scope, RunStatus.CANCELLED, reason, None, ended)


def _cancelled_entry(reason: str) -> dict[str, Any]:
    """The payload of the `run_completed` entry of a run cancelled for `reason`."""
    return trail.run_completed(RunStatus.CANCELLED, reason, Usage())


def outcome_result(
    outcome: Outcome, scope: RunScope, started: float, finish: FinishNode | None
) -> tuple[RunResult, OutputValidationError | None]:
    """The run's result from the interpreter's outcome (the answer parsed when the agent has
    an `output_schema`: `finish`), and the error `run()` raises when that answer never fit."""
    state = outcome.state
    usage = Usage.from_dict(state.get("usage") or {})
    result = RunResult(
        output=final_output(state),
        run_id=scope.run_id,
        session_id=scope.session_id,
        user_id=scope.user_id,
        status=RunStatus(outcome.status),
        reason=outcome.reason,
        turns=usage.model_calls,
        node_visits=dict(outcome.visits),
        usage=usage,
        pending=outcome.pending,
        timings={"started": started, "duration_s": time.time() - started},
    )
    if finish is not None and result.ok:
        result.parsed = finish.answer.validate(result.output)
    cause = getattr(outcome.error, "cause", None)
    # Raised by `run()` only for the agent's own `output_schema` step: an `llm` node of the
    # graph whose answer never fits its schema fails the run like any other node.
    finishing = finish is not None and outcome.node == finish.name
    if finishing and isinstance(cause, OutputValidationError):
        return result, cause
    return result, None


async def restore_ended(
    deps: Deps,
    record: RunRecord,
    leased: bool,
    sink: EventSink,
    on_episode: Callable[[Episode], None] | None,
) -> None:
    """What an outage or a crash cut off a finished run's end, done now under the run's
    lease (held already when `leased`): its last audit entries, which its journal kept (its
    `run_completed`, kept with its end: `journal_end`; or what an outage cut off then),
    written behind the marker and let go of; and the episode memory could not keep then
    (`run_episode`), kept now and handed to `on_episode` (fact extraction). A run with
    neither: a read or two."""
    runtime = deps.runtime
    # (With the no-op log the entries stay kept, as at any resume.)
    auditing = AuditMode.of(deps.audit_log).enabled
    outbox = runtime if isinstance(runtime, AuditOutbox) and auditing else None
    kept = outbox is not None and bool(await outbox.kept_audit_entries(record.run_id))
    if not kept and await owed_episode(deps, record) is None:
        return
    async with contextlib.nullcontext() if leased else hold_lease(deps.leases, record.run_id):
        if kept:
            await _restore(deps, record)
        await pay_episode(deps, record, sink, on_episode)


async def restore_entries(deps: Deps, record: RunRecord) -> None:
    """The audit entries the journal keeps for a run that stays as it is (a dead letter a
    resume refuses), written behind the marker and let go of, under the run's lease, which
    the caller holds: one read when none is kept; nothing with the no-op log."""
    if AuditMode.of(deps.audit_log).enabled:
        await _restore(deps, record)


async def _restore(deps: Deps, record: RunRecord) -> None:
    writer = AuditWriter(deps.audit_log, record.run_id, record.user_id, fenced_out=lease_lost)
    try:
        await restore_kept(writer, deps.runtime)
    finally:  # an outage part-way: those the log took are let go of, the rest stay
        await keep_unwritten(writer, deps.runtime)

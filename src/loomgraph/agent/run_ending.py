"""How a session ends a run: the `RunResult` of the interpreter's outcome, the run's span
told how the run ended, a run its caller cancelled journaled and audited as cancelled, and
what an outage cut off a finished run's end done at its resume (`restore_ended`).

Each takes what it reads of the session as arguments (the run's span, when the run started,
the agent's `output_schema` step), and `AgentSession` calls each once where it needs it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from loomgraph.agent.leases import hold_lease, lease_stop
from loomgraph.agent.result import RunResult
from loomgraph.agent.run_episode import owed_episode, pay_episode
from loomgraph.engine import audit_trail as trail
from loomgraph.engine.audit_writer import AuditWriter, keep_unwritten, restore_kept
from loomgraph.engine.interpreter import Outcome
from loomgraph.engine.scope import EventSink, RunScope
from loomgraph.graph.state import final_output
from loomgraph.nodes.structured import FinishNode, OutputValidationError
from loomgraph.protocols import (
    AuditAction,
    AuditMode,
    AuditOutbox,
    Deps,
    Episode,
    RunRecord,
    RunStatus,
    Span,
    Usage,
    finished,
    semconv,
)

__all__ = ["cancelled", "outcome_result", "restore_ended", "traced"]


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
    await scope.deps.runtime.finish_run(scope.run_id, RunStatus.CANCELLED, reason, None)
    if scope.auditing:
        ended = trail.run_completed(RunStatus.CANCELLED, reason, Usage())
        await scope.audit(AuditAction.RUN_COMPLETED, trail.RUN_ACTOR, ended)


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
    """What an outage cut off a finished run's end, done now under the run's lease (held
    already when `leased`): its last audit entries (its `run_completed`, after its end was
    journaled), which its journal kept, written behind the marker and let go of; and the
    episode memory could not keep then (`run_episode`), kept now and handed to
    `on_episode` (fact extraction). A run with neither: a read or two."""
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


async def _restore(deps: Deps, record: RunRecord) -> None:
    writer = AuditWriter(deps.audit_log, record.run_id, record.user_id)
    try:
        await restore_kept(writer, deps.runtime)
    finally:  # an outage part-way: those the log took are let go of, the rest stay
        await keep_unwritten(writer, deps.runtime)

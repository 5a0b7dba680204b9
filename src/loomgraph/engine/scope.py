"""`RunScope`: what every node of one run shares — identity, dependencies, the event sink,
the transition counter, the journal of effects and the answer the run was resumed with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from loomgraph.engine import audit_trail as trail
from loomgraph.engine.audit_writer import AuditWriter, Kept
from loomgraph.engine.effects import EffectKey, ResumeInput
from loomgraph.engine.state_size import StateSize
from loomgraph.engine.taint import UntrustedText
from loomgraph.engine.watched import watched
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.state import StateSchema
from loomgraph.protocols import (
    ArgumentReader,
    AuditAction,
    AuditEntry,
    AuditMode,
    AuditOutbox,
    BudgetScope,
    Deps,
    EffectRecord,
    EffectStatus,
    Hooks,
    OutcomeOutbox,
    Reservation,
    RunStatus,
    RunStopped,
    Usage,
)
from loomgraph.protocols.events import EFFECT_UNKNOWN_AFTER_CRASH, Event, hears_events
from loomgraph.protocols.governance import EffectRef
from loomgraph.protocols.idle import is_idle
from loomgraph.protocols.tasks import finished
from loomgraph.protocols.tools import tool_run

EventSink = Callable[[Event], Awaitable[None]]

# The attributes given to the spans of a telemetry that records none (never written to).
NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})

# The run the current task works for, so callbacks of shared objects (a budget's warnings)
# can reach the right run's events.
active_scope: ContextVar[RunScope | None] = ContextVar("loomgraph_active_scope", default=None)

# Set by whoever drives the run (a fleet worker) to stop it at its next effect boundary: an
# async function returning why the run was cancelled, or None while it may go on. Awaited
# before each effect's intent is journaled, so the effect before has its outcome, none is cut.
stop_request: ContextVar[Callable[[], Awaitable[str | None]] | None] = ContextVar(
    "loomgraph_stop_request", default=None
)


class CutOffCall(Protocol):
    """A model call a cancellation cut off (`engine.attempts.ModelAttempts`): charged and
    counted then, journaled once its visit is known to have failed or stopped."""

    key: EffectKey

    async def keep(self) -> Usage:
        """Journal the attempt that was cut off; what the whole call used."""
        ...


class ChildRunner(Protocol):
    """Runs a child graph to its end within a run (the interpreter hands one to each scope)."""

    async def __call__(
        self,
        graph: CompiledGraph,
        scope: RunScope,
        state: dict[str, Any],
        *,
        path: str,
        key_path: str,
    ) -> dict[str, Any]:
        """The child's final state; raises when the child did not complete."""
        ...


@dataclass(slots=True)
class RunScope:
    """What every node of one run shares: identity, dependencies, the event sink, the seq."""

    run_id: str
    user_id: str | None
    session_id: str | None
    deps: Deps
    sink: EventSink
    run_child: ChildRunner
    system: str = ""
    seq: int = 0
    # Held while a child transition takes its seq and is journaled: concurrent `map`
    # branches would otherwise write seqs out of order, or audit one under another's seq.
    transitions_lock: asyncio.Lock | None = None
    model_calls: int = 0
    snapshot_seq: int = 0
    # The size of the run's state as JSON (`SizeLimits.state_chars`), from its first transition.
    state_size: StateSize | None = None
    budget_scope: BudgetScope = field(init=False)
    # The answer the run was resumed with, until the node or call it is for takes it.
    resume: ResumeInput | None = None
    # The keys of the approval requests journaled before this run was resumed: those calls
    # run only with an explicit approval, whatever the permissions say now.
    requested: frozenset[str] = frozenset()
    # The keys of the calls journaled as begun (tool calls, and calls a node decides itself:
    # an effect whose intent holds a `call`), before a resume (read by `restore`) and
    # since: only those can have run, so only their records are read before a decision that
    # could come out otherwise now (`ToolGate`); a fresh call reads nothing there.
    begun: set[str] = field(default_factory=set)
    # The run's untrusted text so far (tool results, earlier answers, the tool descriptions
    # of MCP servers not trusted), to tell tainted calls.
    untrusted: UntrustedText = field(default_factory=UntrustedText)
    # The untrusted text of the run whose task started this one (an Agent a tool runs), when
    # it has any: a prompt carrying it is untrusted here too (`agent.run_memory`).
    callers_untrusted: UntrustedText | None = field(init=False)
    # The keys of the model calls whose journaled answers this run replayed: their answers
    # count them, so a crash charge of the same execution is not counted again
    # (`agent.recovery.crashed_usage`). Written on a replay only.
    replayed: set[str] = field(default_factory=set)
    # What model calls no journaled patch carries were charged, by call key: calls that gave
    # up, and the answered calls of a visit that failed, was retried or stopped the run
    # (`engine.kept_usage`). The next transition of that visit carries them (a retry that
    # answers, an `on_error` route); a call made again or replayed counts them in its answer
    # instead; the run's result adds what is left.
    failed_usage: dict[str, Usage] = field(default_factory=dict)
    # The model calls a cancellation cut off (a node's `timeout`, the run's deadline), by
    # call key: charged and counted (`failed_usage`) as they were cut; their attempts are
    # journaled when the interpreter keeps what a failed or stopped visit used, or when the
    # call is made again, and forgotten when a transition carries them. Nothing is written
    # while the task is being cancelled (a caller's cancel: its run reports no usage).
    cut_off: dict[str, CutOffCall] = field(default_factory=dict)
    # What each child graph run by a node not yet journaled used, by its path (`each/0/`):
    # the node's transition carries it once written; a run that stops or fails before counts
    # it in its result (the ledger charged it).
    child_usage: dict[str, Usage] = field(default_factory=dict)
    # The child visits (qualified node, visit) of the visit the run stopped in, journaled
    # (and charged) before it stopped: a resume does them again from the journal, uncharged,
    # as the run that never stopped made them once (`agent.checkpoints.position`). Each is
    # taken once, and all are dropped when that visit ends: a later visit of the same node
    # runs children of the same names, new ones.
    redone_visits: set[tuple[str, int]] | None = None
    # The holds of child visits that ended without a transition (stopped, cut off), by
    # qualified node, until the visit above them decides (`engine.cut_visits`).
    cut_visits: list[tuple[str, Reservation]] = field(default_factory=list)
    # Whether a request for approval is journaled for the run to stop at: a parallel
    # branch that asks meanwhile stops without journaling its own (`StopDeferred`), so no
    # request's deadline runs while nobody can be shown it. Cleared when a sibling's failure
    # overtakes that stop (`nodes.concurrency.run_all`): the run may go on (`on_error`,
    # `retry`) and no longer stops there.
    asking: bool = False
    # Per tool, how many calls in a row it rejected for their arguments.
    invalid_args: dict[str, int] = field(default_factory=dict)
    # The run's wall-clock deadline (seconds since the epoch, `RunRecord.deadline`): a node
    # still running then is stopped, as a reservation after it would be refused.
    deadline: float | None = None
    # Read once from the audit log: whether to record anything (the no-op log: no entry is
    # even built) and whether entries carry content.
    auditing: bool = field(init=False)
    audit_content: bool = field(init=False)
    # The run's audit entries on their way to the log (made at the first entry).
    audit_writer: AuditWriter | None = None
    # Held while an entry is kept with an effect's outcome and queued, or kept ones are let
    # go of: the writer's order of kept entries stays the journal's (`map` branches ask at
    # once). Made by the first approval used.
    keeping_lock: asyncio.Lock | None = None
    # Whether anything hears the run's events: a run whose only consumer drops them (the
    # no-op hooks) builds none.
    listening: bool = field(init=False)
    # Whether the telemetry records spans (the no-op one says `enabled = False`): when not,
    # no span attributes are built.
    tracing: bool = field(init=False)
    # The hooks, when they do something before or after a node (the no-op ones do not).
    node_hooks: Hooks | None = field(init=False)
    # The tool host, when its tools convert their arguments and rules or hooks read them
    # (`engine.received`); None when nothing needs the arguments as a tool receives them.
    arg_reader: ArgumentReader | None = field(init=False)

    def __post_init__(self) -> None:
        # A run started inside another run's task (an Agent called by its tool) ends before
        # that run can: its budget scope names that run and the runs it was started from.
        outer = active_scope.get()
        if outer is None:
            self.budget_scope = BudgetScope(self.run_id, self.user_id)
        else:  # and, when a tool call of that run started it, that call (`tool_run`)
            calling, caller = tool_run.get(), None
            if calling is not None and calling.run_id == outer.run_id:
                caller = calling.key or None
            above = outer.budget_scope
            ancestors, callers = (*above.ancestors, outer.run_id), (*above.callers, caller)
            self.budget_scope = BudgetScope(self.run_id, self.user_id, ancestors, callers)
        self.callers_untrusted = outer.untrusted if outer is not None and outer.untrusted else None
        mode = AuditMode.of(self.deps.audit_log)
        self.auditing, self.audit_content = mode.enabled, mode.content
        self.listening = hears_events(self.sink)
        self.tracing = getattr(self.deps.telemetry, "enabled", True) is not False
        hooks = self.deps.hooks
        idle = is_idle(hooks.before_node) and is_idle(hooks.after_node)
        self.node_hooks = None if idle else hooks
        reads = self.deps.permissions_read_args or not is_idle(hooks.before_tool)
        self.arg_reader = self.deps.arg_reader if reads else None
        described = self.deps.untrusted_descriptions
        if described is not None:  # MCP servers not trusted: their descriptions taint calls
            described.watch_untrusted(self.untrusted)

    async def reserve(
        self, kind: str, amount: Usage, effect: EffectRef | None = None
    ) -> Reservation | None:
        """Set an amount aside in the budget for `effect` (the execution of a journaled
        effect it is for, kept with the hold); nothing to do when the budget has no caps."""
        if not self.deps.budgeted:
            return None
        held = await self.deps.budget.reserve(
            Reservation(self.budget_scope, kind, amount, effect=effect)  # type: ignore[arg-type]
        )
        # A node visit's empty hold is left out: its transition entry says it happened.
        if self.auditing and amount:
            await self.audit(AuditAction.BUDGET_RESERVE, trail.BUDGET_ACTOR, trail.budget(held))
        return held

    async def settle(self, reservation: Reservation | None, actual: Usage) -> None:
        """Replace a reservation by what was spent, to the end even when the run is cancelled
        meanwhile: the spending happened, and a settlement cut off would leave the hold to
        be released, uncharged, when the run ends."""
        if reservation is not None:
            added = await finished(self.deps.budget.settle(reservation, actual))
            if self.auditing and (reservation.amount or actual):
                payload = trail.budget(reservation, actual, added)
                await self.audit(AuditAction.BUDGET_SETTLE, trail.BUDGET_ACTOR, payload)

    async def release(self, reservation: Reservation | None) -> None:
        """Give a reservation back unspent."""
        if reservation is not None:
            await self.deps.budget.release(reservation)
            if self.auditing and reservation.amount:
                payload = trail.budget(reservation)
                await self.audit(AuditAction.BUDGET_RELEASE, trail.BUDGET_ACTOR, payload)

    async def emit(
        self, kind: str, payload: dict[str, Any], node: str | None, seq: int | None = None
    ) -> None:
        """Send one event; by default it carries the seq of the transition being made."""
        if not self.listening:
            return
        await self.sink(
            Event(
                kind,
                # A copy: what a listener changes (a hook "redacting" a call's arguments)
                # must not change what the run does, journals or audits.
                watched(payload),
                self.run_id,
                self.seq + 1 if seq is None else seq,
                node,
                self.user_id,
                self.session_id,
                time.time(),
            )
        )

    async def audit(self, action: AuditAction, actor: str, payload: dict[str, Any]) -> None:
        """Queue one entry for the audit log, for this run and user, written behind the run
        in order (`AuditWriter`); `audit_written` waits for them. Callers check `auditing`
        first, so a run with the no-op log builds no payload."""
        self.writer().add(action, actor, payload)

    def measured_state(self, schema: StateSchema, state: dict[str, Any]) -> StateSize:
        """The run's state size (`SizeLimits.state_chars`), measured once per process (at
        its start or resume) and kept up to date by each patch's `check`."""
        if self.state_size is None:
            self.state_size = StateSize(schema, state, self.deps.size_limits.state_chars)
        return self.state_size

    def writer(self) -> AuditWriter:
        """The run's audit writer, made at its first entry."""
        writer = self.audit_writer
        if writer is None:
            writer = self.audit_writer = AuditWriter(self.deps.audit_log, self.run_id, self.user_id)
        return writer

    async def audit_written(self) -> None:
        """Wait until every audit entry of the run so far is in the log: before an effect
        starts (a model's stream, a tool call) and before the run returns."""
        if self.audit_writer is not None:
            await self.audit_writer.written()

    def _keeping(self) -> asyncio.Lock:
        lock = self.keeping_lock
        if lock is None:
            lock = self.keeping_lock = asyncio.Lock()
        return lock

    async def end_effect_keeping(
        self, key: EffectKey, outcome: dict[str, Any], entry: AuditEntry
    ) -> bool:
        """Journal an effect's outcome with the audit entry of what it records (an approval's
        use) kept in the journal's audit outbox beside it, in one transaction, then queue the
        entry marked kept: a crash before the log has it leaves it kept, for the resume to
        write (`restore_kept`); `let_go_kept` lets go of it once the log has it. False, and
        nothing written, when the journal keeps no entries (not an `AuditOutbox`)."""
        runtime = self.deps.runtime
        if not isinstance(runtime, AuditOutbox):
            return False
        async with self._keeping():
            if isinstance(runtime, OutcomeOutbox):
                await runtime.end_effect_keeping(
                    self.run_id, key.text, outcome, EffectStatus.DONE, [entry]
                )
            else:  # kept first: a crash in between writes it twice rather than not at all
                await runtime.keep_audit_entries(self.run_id, [entry])
                await self.end_effect(key, outcome)
            self.writer().add(*entry, Kept.ALREADY)
        return True

    async def let_go_kept(self) -> None:
        """Wait until the log has the entries the run kept with its effects' outcomes
        (`end_effect_keeping`), then have the journal let go of them: before the call they
        lead to acts. Nothing at all (no wait, no write) while none is kept."""
        writer = self.audit_writer
        if writer is None or not writer.kept:
            return
        runtime = self.deps.runtime
        async with self._keeping():
            await writer.written()
            logged = writer.kept_logged
            if logged and isinstance(runtime, AuditOutbox):
                await runtime.drop_audit_entries(self.run_id, logged)
                writer.let_go(logged)

    async def begin_effect(
        self, key: EffectKey, kind: str, intent: dict[str, Any], node: str
    ) -> EffectRecord | None:
        """Journal an effect's intent; the earlier record when the key was seen before (an
        unfinished one is reported as `effect_unknown_after_crash`). A stop requested for the
        run (`stop_request`) ends it here, `cancelled`, before the intent is written."""
        stop = stop_request.get()
        if stop is not None and (why := await stop()) is not None:
            raise RunStopped(RunStatus.CANCELLED, why)
        prior = await self.deps.runtime.begin_effect(
            EffectRecord(self.run_id, key.text, kind, intent)
        )
        if prior is not None and prior.status != EffectStatus.DONE:
            await self.emit(EFFECT_UNKNOWN_AFTER_CRASH, {"key": str(key), "kind": kind}, node)
            if self.auditing:
                unknown = {"key": str(key), "kind": kind, "node": node, "status": prior.status}
                await self.audit(AuditAction.EFFECT_UNKNOWN, trail.RUNTIME_ACTOR, unknown)
        return prior

    async def end_effect(
        self, key: EffectKey, outcome: dict[str, Any], status: EffectStatus = EffectStatus.DONE
    ) -> None:
        """Journal an effect's outcome."""
        await self.deps.runtime.end_effect(self.run_id, key.text, outcome, status)

    async def finished_effect(self, key: EffectKey) -> dict[str, Any] | None:
        """The outcome of an effect that finished earlier in this run, or None."""
        effect = await self.deps.runtime.effect(self.run_id, key.text)
        if effect is None or effect.status != EffectStatus.DONE:
            return None
        return effect.outcome

"""Going on from a journaled run: resuming it (the answer it brings, the graph it goes on
with, its lease, its count of failed recoveries) or forking a new run from one of its
checkpoints. `Agent.resume` and `Agent.fork` are thin calls of `Resumer`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from loomgraph.agent.answers import answered, given_now, journal_answer, pending_of
from loomgraph.agent.arguments import check_checkpoint, check_mapping, check_text
from loomgraph.agent.checkpoints import Position, ResumeError, position
from loomgraph.agent.fleet import FleetRun, cancel_check, check_run_agent, fleet_queue, fleet_run_of
from loomgraph.agent.fleet_errors import JobUnusable, RunJobPending
from loomgraph.agent.governance_state import (
    check_effect_rows,
    check_governance,
    describe_policy,
    untrusted_until,
)
from loomgraph.agent.leases import hold_lease
from loomgraph.agent.pinning import GRAPH_CHOICES, GraphChoice, check_move, move_run, not_kept
from loomgraph.agent.pinning import run_graph as kept_graph
from loomgraph.agent.recovery import WAITING, begin_recovery, end_recovery, reset_recoveries
from loomgraph.agent.result import RunResult
from loomgraph.agent.resume_answers import (
    NO_VALUE,
    answer_for,
    bound,
    owed_tools_offered,
    usable_here,
)
from loomgraph.agent.run_ending import ENDED_ASIDE, end_clock, restore_ended
from loomgraph.agent.session import AgentSession
from loomgraph.engine.effects import BoundValue, ResumeInput
from loomgraph.engine.scope import EventSink, stop_request
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.state import snapshot_of
from loomgraph.protocols import (
    FINAL_STATUSES,
    AuditAction,
    Deps,
    RunRecord,
    RunStart,
    RunStatus,
    Runtime,
    UnknownRun,
)

__all__ = ["NO_VALUE", "Resumer", "RunNotStarted", "RunQueued", "answer_for", "prompt_of"]


class RunNotStarted(ResumeError):
    """The run never started: a fleet run cancelled while it was queued, or failed because
    no worker could use its job (`JobUnusable`). The journal keeps no prompt or first state
    of it (they were in its job), so it cannot be resumed, retried or forked by any agent;
    nothing was journaled."""

    def __init__(self, run_id: str, status: str, doing: str = "resume", why: str = "") -> None:
        how = (
            "cancelled before a worker took it up"
            if status == "cancelled"
            else "its job could not start it: see its reason"
        )
        super().__init__(
            why
            or f"run {run_id} never started (it is {status}: {how}), so the journal has no "
            f"prompt or first state of it to {doing}; submit a new run"
        )
        self.run_id, self.status = run_id, status


class RunQueued(RunNotStarted):
    """The run waits in the fleet's queue and has not started: a worker starts it."""

    def __init__(self, run_id: str, doing: str = "resume") -> None:
        super().__init__(
            run_id,
            "queued",
            doing,
            f"run {run_id} is queued and has not started; a worker starts it (there is "
            f"nothing to {doing} yet)",
        )


# Makes the session that goes on with a run: (prompt, compiled graph, identity options).
SessionFactory = Callable[..., AgentSession]
# Runs that ended but not for good: resumed, they are journaled `running` as they go on.
_REOPENED = frozenset({RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DEAD_LETTER})


@dataclass(frozen=True, slots=True)
class Resumer:
    """What going on from the journal needs of its Agent: the bundle, the Agent's graph, the
    graphs compiled from the journal (by hash, shared with the Agent), a session factory, the
    limit of failed recoveries before a run becomes a dead letter, the instructions (for
    a fork of a run the journal keeps no system prompt of) and the Agent's name: a run
    another named Agent started is refused (`RunOfAnotherAgent`) before anything is written."""

    deps: Deps
    compiled: CompiledGraph
    kept: dict[str, CompiledGraph]
    session: SessionFactory
    max_recoveries: int
    instructions: str = ""
    agent_name: str = ""

    async def _load(self, run_id: str, doing: str) -> RunRecord:
        """The run's record, when this Agent may go on with it (`UnknownRun`,
        `RunOfAnotherAgent`) and it started (`RunQueued`, `RunNotStarted`: a fleet run that
        never started has no prompt or first state in the journal to `doing` from)."""
        check_text("run_id", run_id)
        runtime = self.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        await check_run_agent(runtime, record, self.agent_name)
        if record.status == RunStatus.QUEUED:
            raise RunQueued(run_id, doing)
        # Every run that started keeps its start (`initial`) but those of a journal from
        # before starts were kept, which have transitions.
        if record.initial is None and not await runtime.transitions(run_id):
            raise RunNotStarted(run_id, str(record.status), doing)
        return record

    async def resume(
        self,
        sink: EventSink,
        run_id: str,
        *,
        graph: GraphChoice = "pinned",
        value: Any = NO_VALUE,
        approve: Any = NO_VALUE,
        value_key: str = "",
        override_policy: bool = False,
        leased: bool = False,
    ) -> RunResult:
        """Continue a run from its journal, its events going to `sink` (see `Agent.resume`).

        `leased`: the caller holds the run's lease already and looked at the run under it
        (a fleet worker recovering it, which must not let go of it in between: a cancel
        would land there and be overridden). Otherwise this is a resume by hand, which goes
        on despite a cancel asked before it took the run (a cancelled run resumes).
        `value_key`: the request a fleet job's `value` was checked against (`submit_resume`
        keeps it in the job): the value answers that request or nothing."""
        given_at = given_now()  # before any read: an answer approves no later request
        if value_key and value is not NO_VALUE:
            value = BoundValue(value, value_key)
        if graph not in GRAPH_CHOICES:
            raise ResumeError(f"graph must be 'pinned' or 'current', not {graph!r}")
        runtime = self.deps.runtime
        record = await self._load(run_id, "resume")
        # Refused before the lease, else bound to the request it answers: checked so under it.
        answer = await answer_for(runtime, record, value, approve, given_at)
        value, approve = bound(value, approve, answer)
        if record.status in FINAL_STATUSES and record.result is not None:
            await self.repair(record, sink, leased=leased)
            return RunResult.from_dict(record.result)  # a finished run: nothing runs again
        own = await kept_graph(runtime, record, self.compiled, self.kept)
        if graph == "pinned" and own is None:
            raise not_kept(record, self.compiled)
        target = own if graph == "pinned" and own is not None else self.compiled
        await usable_here(record, answer, self.deps, own or target)  # used once: not wasted
        session = self._going_on(record, target)
        go_on = _GoOn(sink, session, own, target, value, approve, override_policy, leased)
        if leased:
            return await self._go_on(run_id, record, go_on)
        async with hold_lease(self.deps.leases, run_id):
            return await self._go_on(run_id, record, go_on)

    async def repair(self, record: RunRecord, sink: EventSink, *, leased: bool = True) -> None:
        """Redo what a crash cut off a run left as it is, under its lease (held if `leased`)."""
        ending = self._going_on(record, self.compiled)  # the Agent's fact extraction
        await restore_ended(self.deps, record, leased, sink, ending.on_episode)
        if leased and record.status in ENDED_ASIDE:  # found: its clock ended again (a crash
            await end_clock(self.deps, record)  # may have cut its end off before it)

    def _going_on(self, record: RunRecord, compiled: CompiledGraph) -> AgentSession:
        """The session going on with run `record` (its prompt, user, session, id) on `compiled`."""
        return self.session(
            prompt_of(record),
            compiled=compiled,
            user_id=record.user_id,
            session_id=record.session_id,
            run_id=record.run_id,
        )

    async def _go_on(self, run_id: str, record: RunRecord, go: _GoOn) -> RunResult:
        """The resume, under the run's lease."""
        runtime = self.deps.runtime
        own, target, graph = go.own, go.target, go.own or go.target
        # Read where the run stands only once it is ours: another worker may have moved
        # it on, or finished it, while this one waited.
        record = await runtime.load_run(run_id) or record
        # Checked again under the lease, as bound: of two answers to one request one wins,
        # the other refused even when the run waits for a later request (of that call id).
        answer = await answer_for(runtime, record, go.value, go.approve)
        if record.status in FINAL_STATUSES and record.result is not None:
            return RunResult.from_dict(record.result)
        fleet = await fleet_run_of(runtime, run_id)
        if fleet is not None and answer is not None and not go.leased:
            await _check_no_answer_queued(runtime, run_id)
        changed = check_governance(record, self.deps, override=go.override_policy)
        transitions = await runtime.transitions(run_id)
        at = position(graph, record, transitions)
        await check_effect_rows(runtime, run_id)  # like the transitions: before any write
        if target is not own:  # checked before anything is written or counted
            at.state = check_move(record, at, transitions, own, target)
        if changed is not None:
            await self.deps.audit_log.record(
                AuditAction.POLICY_OVERRIDE,
                run_id=run_id,
                user_id=record.user_id,
                actor="agent",
                payload=changed,
            )
        dead = await begin_recovery(self.deps, record, self.max_recoveries, graph, self.agent_name)
        if dead is not None:  # too many failed recoveries: now a dead letter
            return dead
        if target is not own:
            await move_run(runtime, record, target)
        token = None
        if fleet is not None:
            token = await self._watch_cancels(run_id, fleet, go.leased)
        if record.status in WAITING:
            answer = await self._take_up(record, answer)
        elif record.status in _REOPENED:
            # A failed or cancelled run (or a dead letter retried) goes on too: journaled
            # `running` as it is, not as it ended before.
            await runtime.finish_run(run_id, RunStatus.RUNNING, "", None)
        try:
            result = await go.session.continue_from(
                go.sink, record, at, new_run=False, resume=answer
            )
        finally:
            if token is not None:
                stop_request.reset(token)
        await end_recovery(runtime, record, result)
        return result

    async def _take_up(self, record: RunRecord, answer: ResumeInput | None) -> ResumeInput | None:
        """Take a waiting run up with its answer, under its lease: the answer journaled
        first, as the effect the tool gate or the interrupt would write, then the run
        `running`, so a crash after either leaves the answer to the next resume (a counted
        recovery once the run reads `running`). A run whose answer is journaled already (a
        crash came between the two) is taken up alike; one without an answer is left as it
        is. The answer to go on with: None once the journal holds it (read there, as after
        a crash)."""
        runtime, run_id = self.deps.runtime, record.run_id
        if answer is not None:
            limit = self.deps.size_limits.tool_args_chars
            if await journal_answer(runtime, record, answer, limit):
                answer = None
        else:
            pending = pending_of(record)
            if pending is None or not pending.key:
                return None
            if not await answered(runtime, run_id, pending.key):
                return None
        # From here on the run is advanced: while it read `waiting`, a fleet worker would
        # take a second answer for it and find the first one used.
        await runtime.finish_run(run_id, RunStatus.RUNNING, "", None)
        return answer

    async def _watch_cancels(self, run_id: str, fleet: FleetRun, leased: bool) -> Any:
        """For a fleet run: a resume by hand overrides a cancel asked before it (it goes on
        with a cancelled run); a cancel asked while it goes on stops it at its next effect
        boundary, as a worker's run stops (unless the caller, a worker, watches already).
        The `stop_request` token to reset afterwards, or None."""
        queue = fleet_queue(self.deps.runtime)
        if not leased and fleet.cancelled_by is not None:
            await queue.forget_cancel(run_id)
        if stop_request.get() is not None:
            return None
        return stop_request.set(cancel_check(queue, run_id))

    async def retry(
        self, sink: EventSink, run_id: str, *, graph: GraphChoice, override_policy: bool = False
    ) -> RunResult:
        """Forget the run's failed recoveries (a dead letter becomes failed), then resume it
        (`override_policy` as for `resume`)."""
        record = await self._load(run_id, "retry")  # refused before the count is forgotten
        # So is a retry under another policy: the refusal's advice, to retry with the
        # override, must find the run as it was (the resume checks again, under the lease).
        check_governance(record, self.deps, override=override_policy)
        own = await kept_graph(self.deps.runtime, record, self.compiled, self.kept)
        await owed_tools_offered(record, self.deps, own or self.compiled)
        await reset_recoveries(self.deps.runtime, run_id)
        return await self.resume(sink, run_id, graph=graph, override_policy=override_policy)

    async def fork(
        self, sink: EventSink, run_id: str, *, at: int, patch: dict[str, Any] | None
    ) -> RunResult:
        """A new run from checkpoint `at` of `run_id`, its state optionally patched (see
        `Agent.fork`)."""
        session, forked, fresh = await self.prepare_fork(run_id, at=at, patch=patch)
        return await session.continue_from(sink, forked, fresh, new_run=True)

    async def prepare_fork(
        self, run_id: str, *, at: int, patch: dict[str, Any] | None
    ) -> tuple[AgentSession, RunRecord, Position]:
        """The fork of checkpoint `at` of `run_id`, not journaled yet: its session, its record
        (with the start it goes on from) and its position. Everything a fork refuses is
        refused here, before anything is written."""
        check_checkpoint("at", at)
        check_mapping("patch", patch)
        runtime = self.deps.runtime
        record = await self._load(run_id, "fork")
        transitions = await runtime.transitions(run_id)
        own = await kept_graph(runtime, record, self.compiled, self.kept)
        # Only from a checkpoint of the run's own graph (`NotACheckpoint`, a ValueError).
        where = position(own or self.compiled, record, transitions, upto=at, fork=True)
        if own is not self.compiled:
            where.state = check_move(record, where, transitions, own, self.compiled)
        if patch:
            self.compiled.schema.apply(where.state, self.compiled.schema.check_input(dict(patch)))
        # Untrusted text the parent held anywhere (a state field, a map branch's result),
        # not only in the conversation the fork takes over; a patch does not launder it.
        untrusted = await untrusted_until(
            runtime, self.deps.tools, record, transitions, at, where.state.get("messages") or ()
        )
        # The fork's prompt is its state's input (a patch may have given it another).
        prompt = given if isinstance(given := where.state.get("input"), str) else prompt_of(record)
        session = self.session(prompt, user_id=record.user_id, session_id=record.session_id)
        forked = session._record(
            parent_run_id=run_id,
            parent_seq=at,
            initial=RunStart(
                snapshot_of(where.state),
                record.initial.system if record.initial else self.instructions,
                describe_policy(self.deps),
                # Kept, so a fork resumed before its first transition goes on from there.
                node=where.next_node,
                visits=dict(where.visits),
                agent=self.agent_name,
                untrusted=untrusted,
            ),
        )
        return session, forked, Position(where.state, where.visits, where.next_node, 0)

    async def start_fork(self, sink: EventSink, run_id: str) -> RunResult:
        """Start a fork a fleet's `submit_fork` journaled `queued` with its start, from that
        start, with the graph it is pinned to. The caller (a worker) holds the run's lease and
        found it queued under it; the run is journaled `running` (fenced) before it goes on,
        so a crash from then on leaves a run the fleet recovers, counted, like any other.
        `JobUnusable` for a queued run that is no fork (its record keeps no start)."""
        runtime = self.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        if record.initial is None or record.parent_run_id is None:
            raise JobUnusable(f"run {run_id} is no fork: the journal keeps no start of it")
        own = await kept_graph(runtime, record, self.compiled, self.kept)
        if own is None:
            raise not_kept(record, self.compiled)
        at = position(own, record, [])
        # Journaled with the policy it runs under here, as a worker that starts a run does,
        # and the trace of its first run span (`continue_from`, `starting`).
        initial = replace(record.initial, policy=describe_policy(self.deps))
        started = replace(record, status=RunStatus.RUNNING, initial=initial)
        start = runtime.start_queued_run  # type: ignore[attr-defined]
        session = self._going_on(record, own)
        return await session.continue_from(sink, started, at, new_run=False, starting=start)


@dataclass(frozen=True, slots=True)
class _GoOn:
    """What a resume decided before it took the run's lease."""

    sink: EventSink
    session: AgentSession
    own: CompiledGraph | None
    target: CompiledGraph
    value: Any
    approve: Any
    override_policy: bool
    leased: bool


def prompt_of(record: RunRecord) -> str:
    """The prompt a run started with ("" when the journal does not keep it)."""
    return record.initial.prompt if record.initial else ""


async def _check_no_answer_queued(runtime: Runtime, run_id: str) -> None:
    """`RunJobPending` for an answer by hand to a fleet run whose job waits in the queue:
    that job holds an answer given before (`submit_resume`), which stands, as it does
    against a second `submit_resume`. A job a worker holds holds the run's lease too."""
    if await fleet_queue(runtime).pending_job(run_id) == "queued":
        raise RunJobPending(run_id, "queued")

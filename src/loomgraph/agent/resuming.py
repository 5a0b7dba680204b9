"""Going on from a journaled run: resuming it (the answer it brings, the graph it goes on
with, its lease, its count of failed recoveries) or forking a new run from one of its
checkpoints. `Agent.resume` and `Agent.fork` are thin calls of `Resumer`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loomgraph.agent.checkpoints import (
    Position,
    ResumeError,
    approval,
    check_agent,
    not_answered,
    position,
    resume_value,
)
from loomgraph.agent.governance_state import check_policy, describe_policy
from loomgraph.agent.leases import hold_lease
from loomgraph.agent.pinning import GRAPH_CHOICES, GraphChoice, check_move, move_run, not_kept
from loomgraph.agent.pinning import run_graph as kept_graph
from loomgraph.agent.recovery import begin_recovery, end_recovery, reset_recoveries
from loomgraph.agent.result import RunResult
from loomgraph.agent.session import AgentSession
from loomgraph.engine.effects import ResumeInput
from loomgraph.engine.scope import EventSink
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.graph.state import snapshot_of
from loomgraph.protocols import (
    FINAL_STATUSES,
    AuditAction,
    Deps,
    RunRecord,
    RunStart,
    RunStatus,
    UnknownRun,
)

__all__ = ["NO_VALUE", "Resumer", "RunQueued", "answer_for", "prompt_of"]


class RunQueued(ResumeError):
    """The run waits in the fleet's queue and has not started: a worker starts it."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is queued and has not started; a worker starts it")
        self.run_id = run_id


class _NoValue:
    """The type of `NO_VALUE`: "no answer given" (None is a valid answer)."""

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()

# Makes the session that goes on with a run: (prompt, compiled graph, identity options).
SessionFactory = Callable[..., AgentSession]


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

    async def _load(self, run_id: str) -> RunRecord:
        """The run's record, when this Agent may go on with it (`UnknownRun`,
        `RunOfAnotherAgent`)."""
        record = await self.deps.runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        check_agent(record, self.agent_name)
        return record

    async def resume(
        self,
        sink: EventSink,
        run_id: str,
        *,
        graph: GraphChoice = "pinned",
        value: Any = NO_VALUE,
        approve: Any = NO_VALUE,
        override_policy: bool = False,
    ) -> RunResult:
        """Continue a run from its journal, its events going to `sink` (see `Agent.resume`)."""
        if graph not in GRAPH_CHOICES:
            raise ResumeError(f"graph must be 'pinned' or 'current', not {graph!r}")
        runtime = self.deps.runtime
        record = await self._load(run_id)
        if record.status == RunStatus.QUEUED:
            raise RunQueued(run_id)
        answer = await answer_for(runtime, record, value, approve)
        if record.status in FINAL_STATUSES and record.result is not None:
            return RunResult.from_dict(record.result)  # a finished run: nothing runs again
        own = await kept_graph(runtime, record, self.compiled, self.kept)
        if graph == "pinned" and own is None:
            raise not_kept(record, self.compiled)
        target = own if graph == "pinned" and own is not None else self.compiled
        session = self.session(
            prompt_of(record),
            compiled=target,
            user_id=record.user_id,
            session_id=record.session_id,
            run_id=run_id,
        )
        async with hold_lease(self.deps.leases, run_id):
            # Read where the run stands only once it is ours: another worker may have moved
            # it on, or finished it, while this one waited.
            record = await runtime.load_run(run_id) or record
            # Checked again under the lease: of two approvals of one call, one wins.
            answer = await answer_for(runtime, record, value, approve)
            if record.status in FINAL_STATUSES and record.result is not None:
                return RunResult.from_dict(record.result)
            changed = check_policy(record, self.deps, override=override_policy)
            transitions = await runtime.transitions(run_id)
            at = position(own or target, record, transitions)
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
            gave_up = await begin_recovery(
                runtime, record, self.max_recoveries, self.deps.audit_log
            )
            if gave_up is not None:  # too many failed recoveries: now a dead letter
                return gave_up
            if target is not own:
                await move_run(runtime, record, target)
            result = await session.continue_from(sink, record, at, new_run=False, resume=answer)
            await end_recovery(runtime, record, result)
            return result

    async def retry(self, sink: EventSink, run_id: str, *, graph: GraphChoice) -> RunResult:
        """Forget the run's failed recoveries (a dead letter becomes failed), then resume it."""
        await self._load(run_id)  # refused before the count is forgotten
        await reset_recoveries(self.deps.runtime, run_id)
        return await self.resume(sink, run_id, graph=graph)

    async def fork(
        self, sink: EventSink, run_id: str, *, at: int, patch: dict[str, Any] | None
    ) -> RunResult:
        """A new run from checkpoint `at` of `run_id`, its state optionally patched (see
        `Agent.fork`)."""
        runtime = self.deps.runtime
        record = await self._load(run_id)
        transitions = await runtime.transitions(run_id)
        if at and not any(t.seq == at for t in transitions):
            raise ValueError(
                f"run {run_id} has no checkpoint {at}; it has "
                f"1..{transitions[-1].seq if transitions else 0}"
            )
        own = await kept_graph(runtime, record, self.compiled, self.kept)
        where = position(own or self.compiled, record, transitions, upto=at)
        if own is not self.compiled:
            where.state = check_move(record, where, transitions, own, self.compiled)
        if patch:
            self.compiled.schema.apply(where.state, self.compiled.schema.check_input(dict(patch)))
        session = self.session(
            prompt_of(record), user_id=record.user_id, session_id=record.session_id
        )
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
            ),
        )
        fresh = Position(where.state, where.visits, where.next_node, 0)
        return await session.continue_from(sink, forked, fresh, new_run=True)


async def answer_for(
    runtime: Any, record: RunRecord, value: Any, approve: Any
) -> ResumeInput | None:
    """The answer a resume brings, checked against what the run waits for: an answer for a
    run that does not wait for it is refused, not ignored."""
    if value is not NO_VALUE:
        return resume_value(record, value)
    if approve is not NO_VALUE:
        answer = approval(record, approve)
        await not_answered(runtime, record, answer.call_id)
        return answer
    return None


def prompt_of(record: RunRecord) -> str:
    """The prompt a run started with ("" when the journal does not keep it)."""
    return record.initial.prompt if record.initial else ""

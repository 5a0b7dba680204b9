"""`AgentSession`: one run of an Agent, in the run order of the design."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from loomgraph.agent.checkpoints import Position
from loomgraph.agent.deps import current_run
from loomgraph.agent.governance_state import describe_policy, restore
from loomgraph.agent.leases import hold_lease, lease_stop
from loomgraph.agent.pinning import graph_key, pin
from loomgraph.agent.recovery import crashed_usage
from loomgraph.agent.result import RunResult
from loomgraph.agent.run_ending import (
    AuditFence,
    cancelled,
    journal_result,
    outcome_result,
    traced,
)
from loomgraph.agent.run_episode import keep_run_episode
from loomgraph.agent.run_memory import seeded_state
from loomgraph.agent.run_started import audit_started
from loomgraph.engine.audit_writer import keep_unwritten, written_quietly
from loomgraph.engine.effects import ResumeInput
from loomgraph.engine.interpreter import Outcome, run_child, run_extra_step, run_graph
from loomgraph.engine.scope import EventSink, RunScope, active_scope
from loomgraph.engine.taint import note_messages
from loomgraph.errors import InputTooLarge, ServiceUnavailable
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.nodes.structured import (
    DEFAULT_RETRIES,
    FinishNode,
    OutputValidationError,
    StructuredAnswer,
)
from loomgraph.protocols import (
    Deps,
    Episode,
    RunRecord,
    RunStart,
    RunStatus,
    Span,
    Usage,
    cancel_reason,
    finished,
    semconv,
)
from loomgraph.protocols.events import RUN_COMPLETED, RUN_STARTED
from loomgraph.protocols.runtime import Lease
from loomgraph.runtime.errors import LeaseLost, RunConflict, RunExists
from loomgraph.runtime.text import check_run_ids

# Journals a queued run started (`start_queued_run`), given its record with its start.
Starting = Callable[[RunRecord], Awaitable[None]]


class AgentSession:
    """One run of an Agent: identity, the event sink, and the run order of the design."""

    def __init__(
        self,
        graph: CompiledGraph,
        deps: Deps,
        instructions: str,
        prompt: str,
        *,
        user_id: str | None,
        session_id: str | None,
        output_schema: Any = None,
        output_retries: int = DEFAULT_RETRIES,
        run_id: str | None = None,
        on_episode: Callable[[Episode], None] | None = None,
        agent_name: str = "",
    ) -> None:
        self.graph = graph
        self.deps = deps
        self.instructions = instructions
        # Told of every completed run's episode once memory has it and its end is journaled
        # (fact extraction).
        self.on_episode = on_episode
        self.agent_name = agent_name
        self.prompt = prompt
        # The parts of the memory seed that are untrusted text (set once it is read).
        self.seed_untrusted: tuple[str, ...] = ()
        self.user_id = user_id
        self.session_id = session_id
        self.finish = (
            FinishNode(
                StructuredAnswer(output_schema, label="the run's answer"), retries=output_retries
            )
            if output_schema is not None
            else None
        )
        # An error the caller gets raised after the run is journaled (an unfit answer).
        self.error: OutputValidationError | None = None
        self.run_id = run_id or uuid.uuid4().hex
        self._id_given = run_id is not None
        self._run_span: Span | None = None  # told how the run ended (`traced`)
        self._held: Lease | None = None  # the lease `_started` took (fences `keep_unwritten`)
        self._resumed = False  # the run is taken up again (an earlier attempt ran it)

    def _record(self, **fields: Any) -> RunRecord:
        now = time.time()
        compiled = self.graph
        return RunRecord(
            self.run_id,
            compiled.name,
            graph_key(compiled),
            self.user_id,
            self.session_id,
            created_at=now,
            updated_at=now,
            **fields,
        )

    async def execute(self, sink: EventSink, *, leased: bool = False) -> RunResult:
        """Runtime session → root span → audit → memory seed → interpreter → episode → result.

        `leased`: the caller holds the run's lease already (a fleet worker starting a queued
        run takes it before it looks at the run, so two workers never both start it)."""
        limit = self.deps.size_limits.prompt_chars
        if len(self.prompt) > limit:  # refused before anything is written
            raise InputTooLarge("the prompt", len(self.prompt), limit)
        # A chosen id of a journaled run is refused before the run is opened: opening starts
        # and ends the budget's clock and holds under this id, which would charge or release
        # that run's. (`start_run` refuses it too, for two sessions racing with one new id.)
        if (
            self._id_given
            and not leased
            and await self.deps.runtime.load_run(self.run_id) is not None
        ):
            raise RunExists(self.run_id)
        record = self._record()
        check_run_ids(record)  # before the budget's clock, the memory seed, the graph
        async with self._opened(record, sink) as scope:
            state, self.seed_untrusted = await seeded_state(
                scope, self.graph, self.instructions, self.prompt, self.user_id, self.session_id
            )
            # A copy: the run appends to its own message list in place.
            record.initial = RunStart(
                {"input": state["input"], "messages": list(state["messages"])},
                scope.system,
                describe_policy(self.deps),
                agent=self.agent_name,
                untrusted=self.seed_untrusted,
                trace=semconv.span_trace(self._run_span),
            )
            await pin(self.deps.runtime, self.graph)  # the graph the run is pinned to
            start = getattr(self.deps.runtime, "start_queued_run", None)
            if leased and start is not None:
                # A queued run becomes this one only while it is queued and the lease ours:
                # a worker stopped past its lease must not restart a run another finished.
                await start(record)
            else:
                await self.deps.runtime.start_run(record)
            # Only now: a worker whose lease was taken over is refused above, and must leave
            # no entry saying it started the run.
            await audit_started(scope, self.graph, self.prompt, continued=False)
            return await self._started(scope, state, None, None, leased=leased)

    async def continue_from(
        self,
        sink: EventSink,
        record: RunRecord,
        at: Position,
        *,
        new_run: bool,
        resume: ResumeInput | None = None,
        starting: Starting | None = None,
    ) -> RunResult:
        """Go on from a checkpoint: the same run (resume) or a new one (fork); `starting`
        journals a queued fork started (`_opened`)."""
        opened = self._opened(record, sink, resumed=not new_run, starting=starting)
        async with opened as scope:
            scope.resume = resume
            scope.system = record.initial.system if record.initial else self.instructions
            scope.model_calls = int((at.state.get("usage") or {}).get("model_calls", 0))
            # What it started from (a session's history), or for a fork the conversation it
            # takes over; a resume's own results are restored from its effects (`restore`).
            start = record.initial if not new_run else None
            started = start.state if start is not None else at.state
            note_messages(scope.untrusted, self.deps.tools, started.get("messages") or ())
            for text in record.initial.untrusted if record.initial else ():
                scope.untrusted.add(text)  # what its system prompt recalled
            if not new_run:  # the caller holds the run's lease
                if starting is None:  # a queued fork's first start is its own start
                    trace = record.initial.trace if record.initial else None
                    semconv.link_span(self._run_span, trace, semconv.LinkKind.RUN_START)
                self._resumed = True
                scope.seq = scope.snapshot_seq = at.seq
                scope.redone_visits = at.redone
                await restore(scope, self.deps.runtime, self.deps.tools)
                await self._announce(scope)
                return await self._drive(scope, at.state, at.next_node, at.visits)
            if record.initial is not None:  # a fork: its resumes link to this span
                record.initial = replace(record.initial, trace=semconv.span_trace(self._run_span))
            await pin(self.deps.runtime, self.graph)
            await self.deps.runtime.start_run(record)
            return await self._started(scope, at.state, at.next_node, at.visits)

    @contextlib.asynccontextmanager
    async def _opened(
        self,
        record: RunRecord,
        sink: EventSink,
        *,
        resumed: bool = False,
        starting: Starting | None = None,
    ) -> AsyncIterator[RunScope]:
        deps, compiled = self.deps, self.graph
        if deps.startable_tools is not None:  # MCP servers: connect, list, check
            await deps.startable_tools.start()
        self.started = time.time()
        token = current_run.set(record)
        try:
            attributes = semconv.run_attributes(
                run_id=self.run_id,
                graph_name=compiled.name,
                graph_hash=compiled.hash,
                session_id=self.session_id,
                user_id=self.user_id,
                parent_run_id=record.parent_run_id,
                agent_name=self.agent_name,
                model=deps.model,
            )
            with deps.telemetry.span(semconv.RUN_SPAN, attributes) as self._run_span:
                if starting is not None and record.initial is not None:
                    # Journaled with this span's trace (its resumes link to it), before
                    # anything is charged or audited: a refused start leaves nothing.
                    record.initial = replace(
                        record.initial, trace=semconv.span_trace(self._run_span)
                    )
                    await starting(record)
                scope = RunScope(self.run_id, self.user_id, self.session_id, deps, sink, run_child)
                fence = AuditFence(scope)  # a zombie (its lease lost) audits nothing more
                active = active_scope.set(scope)
                over = True
                lost = False  # the run's lease was lost: its entries are another's business
                try:
                    if deps.run_clock is not None:  # the deadline is kept with the run
                        # The budget's own clock starts a run (it may keep another time than
                        # the session's); a kept deadline began when its run did.
                        kept = record.deadline is not None
                        record.deadline = await deps.run_clock.begin_run(
                            scope.budget_scope,
                            started_at=record.created_at if kept else None,
                            deadline=record.deadline,
                        )
                        scope.deadline = record.deadline
                    if record.initial is not None:
                        # A run going on from a checkpoint (resumed, forked); a new run is
                        # audited once its start is journaled (`execute`).
                        await audit_started(
                            scope,
                            self.graph,
                            self.prompt,
                            continued=True,
                            resumed=resumed,
                            parent_run_id=record.parent_run_id,
                        )
                    yield scope
                    await scope.audit_written()  # every entry in the log before it returns
                except ServiceUnavailable:
                    # The run is not over, only cut off: its holds (a settlement the outage
                    # stopped) and its clock stay for the resume, which charges them.
                    over = False
                    raise
                except RunConflict as err:
                    # Another process has the run (it took the lease over, or started it):
                    # the holds under the run's id are its holds now, and its clock.
                    over, lost = False, isinstance(err, LeaseLost)
                    raise
                except asyncio.CancelledError:
                    # Stopped by its lease holder (lease lost, journal out of reach), which
                    # raises one of the two above from it: the run is not over either.
                    stop = lease_stop()
                    if stop is not None:
                        over, lost = False, isinstance(stop, RunConflict)
                        # An error of the run's, unlike its caller's cancel (not an error).
                        traced(
                            scope, self._run_span, {semconv.ERROR_TYPE: semconv.error_type(stop)}
                        )
                    raise
                finally:
                    active_scope.reset(active)
                    fence.close(lost)  # a zombie's queued entries are not written, nor kept
                    await written_quietly(scope.audit_writer)  # after an error: its entries
                    # What an audit outage left unwritten: kept in the journal for the resume.
                    await keep_unwritten(scope.audit_writer, deps.runtime, self._held)
                    if deps.run_clock is not None and over:
                        await deps.run_clock.end_run(scope.budget_scope)
        finally:
            current_run.reset(token)

    async def _announce(self, scope: RunScope) -> None:
        """The `run_started` event, sent once the run's record is in the journal."""
        await scope.emit(RUN_STARTED, {"prompt": self.prompt, "graph": self.graph.name}, None, 0)

    async def _started(
        self,
        scope: RunScope,
        state: dict[str, Any],
        start: str | None,
        visits: dict[str, int] | None,
        *,
        leased: bool = False,
    ) -> RunResult:
        """Drive a run just journaled as started, under its own lease (a fork's too; a
        fleet worker holds the lease already: `leased`)."""
        driving = False
        try:
            await self._announce(scope)  # only once the run is journaled
            if leased:
                driving = True
                return await self._drive(scope, state, start, visits)
            async with hold_lease(self.deps.leases, self.run_id) as lease:
                driving, self._held = True, lease if isinstance(lease, Lease) else None
                result = await self._drive(scope, state, start, visits)
                # The end's entry, kept with the end: let go of once the log has it while
                # the lease is held, so a crash once it is given back finds nothing kept
                # (the resume wrote it again).
                await scope.let_go_kept()
                return result
        except asyncio.CancelledError as err:
            # Cancelled before the graph ran (announcing, taking the lease): without this
            # the journal would say "running" for ever. `_drive` journals its own.
            if not driving:
                await cancelled(scope, self._run_span, cancel_reason(err))
            raise

    async def _drive(
        self,
        scope: RunScope,
        state: dict[str, Any],
        start: str | None,
        visits: dict[str, int] | None,
    ) -> RunResult:
        try:
            outcome = await run_graph(self.graph, scope, state, start=start, visits=visits)
            if self.finish is not None and outcome.status == RunStatus.COMPLETED:
                outcome = await run_extra_step(
                    self.graph, scope, outcome.state, self.finish, outcome.visits
                )
        except asyncio.CancelledError as err:
            await cancelled(scope, self._run_span, cancel_reason(err))
            raise
        # The graph's answer is in hand: the run's end (its episode, the end journaled and
        # audited) goes on to its end even when the caller cancels meanwhile (a timeout
        # around `run`), so the run ends as it ended, not `running` for ever; the caller's
        # cancel is raised once it is done, and the run's last event is not sent then.
        result, data = await finished(self._end(scope, outcome))
        await scope.emit(
            RUN_COMPLETED,
            {
                "status": result.status,
                "reason": result.reason,
                "output": result.output,
                "result": data,
            },
            None,
            scope.seq,
        )
        return result

    async def _end(self, scope: RunScope, outcome: Outcome) -> tuple[RunResult, dict[str, Any]]:
        """The run's result from the graph's outcome, its episode kept in memory and its end
        journaled with its `run_completed` entry (`_drive`); the result and its data."""
        deps = self.deps
        result, self.error = outcome_result(outcome, scope, self.started, self.finish)
        # Charged but not in the state: the calls of visits that failed or stopped and of
        # calls that gave up (by call key, once), the child graphs of the node the run
        # stopped in, crashed attempts.
        result.usage += sum((*scope.failed_usage.values(), *scope.child_usage.values()), Usage())
        result.usage += await crashed_usage(deps, self.run_id, replayed=scope.replayed)
        # Every entry of what the run did is in the audit log before its end is journaled:
        # an outage now leaves the run `running`, to be resumed, not ended without them.
        await scope.audit_written()
        # The episode before the outcome: a crash between the two leaves the run `running`,
        # and its resume ends it and keeps the episode again (replacing it). A zombie (its
        # lease taken over) is refused before memory; facts are drawn once the end is in.
        extract = None
        if result.ok:
            extract = await keep_run_episode(
                scope, self.prompt, result.output, outcome.state, resumed=self._resumed
            )
        # The end and its `run_completed` entry, kept together in the journal (a crash
        # before the log has the entry leaves it for the resume to write).
        data = await journal_result(scope, result, outcome.error)
        if extract is not None and self.on_episode is not None:
            self.on_episode(extract)
        traced(scope, self._run_span, semconv.run_end_attributes(result.status, outcome.error))
        return result, data

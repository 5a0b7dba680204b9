"""What the API and the viewer do, for one authenticated caller: every read goes through the
store with the caller's user id and the agent's name in the query, so another user's run, or
a run another named agent started, is not found."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from loomgraph.agent.agent import Agent
from loomgraph.agent.answers import pending_of
from loomgraph.agent.checkpoints import Checkpoint, diff, history, position
from loomgraph.agent.event_ids import EventId
from loomgraph.agent.job_inputs import submitted_prompt
from loomgraph.agent.resume_answers import unanswered
from loomgraph.agent.resuming import RunNotStarted, RunQueued
from loomgraph.agent.run_events import JournalEvent, follow_events
from loomgraph.agent.streaming import event_stream
from loomgraph.agent.submitting import RunNotCancellable, cancel_idle
from loomgraph.authoring.diagram import RunOverlay
from loomgraph.authoring.render_dot import to_svg
from loomgraph.engine.effects import BoundApproval, BoundValue
from loomgraph.protocols import RunRecord, RunStatus, Transition, UnknownRun
from loomgraph.protocols.events import RUN_STARTED
from loomgraph.protocols.json_values import same_json
from loomgraph.runtime.errors import RunConflict, RunFinished
from loomgraph.serve.auth import Auth, Caller
from loomgraph.serve.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound, ServeError
from loomgraph.serve.hub import Closing, RunHub
from loomgraph.serve.run_pages import RunPage
from loomgraph.serve.store import ServeStore, approvers_run, awaiting_approval
from loomgraph.serve.views import QueuedRun, run_json

__all__ = ["Service", "StoppedWaiting"]

_BEFORE_JOURNAL = frozenset({RUN_STARTED})


class StoppedWaiting(ServeError):
    """The server is shutting down and stopped waiting for a fleet run's result: the run goes
    on in the fleet (nothing was cancelled); its id and status are in the message and here.
    503, so a client knows to read the run later rather than take it as the run's failure."""

    status = 503
    kind = "shutting_down"

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"the server is shutting down and stopped waiting for run {run_id}, which goes "
            f"on in the worker fleet (it is {status} now): read its result later with GET "
            f"/v1/runs/{run_id} (or follow its events), from a server that is up; do not "
            "submit it again"
        )
        self.run_id, self.run_status = run_id, status


@dataclass
class Service:
    """The server's parts: the agent, the key and run store, the runs it drives, auth."""

    agent: Agent
    store: ServeStore
    auth: Auth
    hub: RunHub = field(default_factory=RunHub)
    poll_interval: float = 0.5
    max_body: int = 1 << 20
    dev: bool = False
    # Runs go to the worker fleet (`agent.submit`) instead of being driven in this process.
    fleet: bool = False
    _graph_svg: str | None = None

    # ------------------------------------------------------------------ reads

    async def run(self, caller: Caller, run_id: str) -> RunRecord:
        """The caller's run of this agent, or NotFound (also for another user's run, and for
        a run an agent of another name started)."""
        record = await self._load(caller, run_id)
        if record is None:
            raise NotFound(f"no run {run_id!r}")
        if record.status == RunStatus.QUEUED and record.initial is None:
            # Not started: its input is only in its queued job (a fork's start is journaled).
            submitted = await submitted_prompt(self.agent.deps.runtime, run_id)
            if submitted is not None:
                return QueuedRun.of(record, submitted)
        return record

    async def _load(self, caller: Caller, run_id: str) -> RunRecord | None:
        return await self.store.run(run_id, caller.user_id, agent=self.agent.name)

    async def runs(
        self,
        caller: Caller,
        *,
        status: str | None,
        graph: str | None,
        limit: int,
        cursor: str | None,
    ) -> RunPage:
        """A page of the caller's runs of this agent, newest first."""
        try:
            wanted = RunStatus(status) if status else None
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise BadRequest(f"unknown status {status!r}; one of: {known}") from None
        _check_limit(limit)
        return await self.store.runs(
            caller.user_id,
            status=wanted,
            graph=graph or None,
            limit=limit,
            cursor=cursor,
            agent=self.agent.name,
        )

    async def _journal(self, caller: Caller, run_id: str) -> tuple[RunRecord, list[Transition]]:
        record = await self.run(caller, run_id)
        return record, await self.agent.deps.runtime.transitions(run_id)

    async def _started(self, caller: Caller, run_id: str) -> tuple[RunRecord, list[Transition]]:
        """`_journal` of a run that started: a fleet run that did not (queued, or cancelled
        or failed before a worker took it up) has no first state in the journal, and is
        refused as a fork of it is (`RunQueued`, `RunNotStarted`), never shown a made-up one.
        (A queued fork did journal the start it goes on from; a journal from before starts
        were kept has transitions.)"""
        record, transitions = await self._journal(caller, run_id)
        if record.initial is None and not transitions:
            if record.status == RunStatus.QUEUED:
                raise RunQueued(run_id, "read")
            raise RunNotStarted(run_id, str(record.status), "read")
        return record, transitions

    async def checkpoints(self, caller: Caller, run_id: str) -> list[Checkpoint]:
        """Every checkpoint of the caller's run, with the state after it."""
        record, transitions = await self._started(caller, run_id)
        return history(await self.agent.graph_of(record), record, transitions)

    async def state(self, caller: Caller, run_id: str, seq: int) -> dict[str, Any]:
        """The state of the caller's run after transition `seq` (0: its first state)."""
        record, transitions = await self._started(caller, run_id)
        if seq and not any(t.seq == seq for t in transitions):
            raise NotFound(f"run {run_id!r} has no checkpoint {seq}")
        graph = await self.agent.graph_of(record)
        return position(graph, record, transitions, upto=seq).state

    async def diff(self, caller: Caller, run_id: str, a: int, b: int) -> dict[str, Any]:
        """The fields that differ between two checkpoints, as {"before", "after"}."""
        before = await self.state(caller, run_id, a)
        after = await self.state(caller, run_id, b)
        return {k: {"before": x, "after": y} for k, (x, y) in diff(before, after).items()}

    async def graph_svg(self) -> str:
        """The agent's graph as SVG (drawn once)."""
        if self._graph_svg is None:
            self._graph_svg = await asyncio.to_thread(to_svg, self.agent.graph)
        return self._graph_svg

    async def run_svg(self, caller: Caller, run_id: str) -> str:
        """The graph the caller's run started with, the run drawn over it."""
        record, transitions = await self._journal(caller, run_id)
        overlay = RunOverlay.from_transitions(transitions, status=str(record.status))
        graph = (await self.agent.graph_of(record)).graph
        return await asyncio.to_thread(to_svg, graph, run=overlay)

    def events(
        self, caller: Caller, run_id: str, after: EventId | None
    ) -> AsyncIterator[JournalEvent]:
        """The caller's run's events after `after`, following it live."""
        return follow_events(
            self.agent.deps.runtime,
            run_id,
            after=after,
            changed=self.hub.watcher(run_id),
            poll_interval=self.poll_interval,
            load=lambda rid: self._load(caller, rid),
        )

    # ------------------------------------------------------------------ writes

    async def start(self, caller: Caller, prompt: str, session_id: str | None) -> str:
        """Start a run as the caller, driven in the background (here, or by the fleet's
        workers when `fleet`); its id."""
        self._open()
        if self.fleet:
            return await self.agent.submit(prompt, user_id=caller.user_id, session_id=session_id)
        session = self.agent.session(prompt, user_id=caller.user_id, session_id=session_id)
        stream = event_stream(
            session.execute, self.agent.deps.hooks.on_event, lambda: session.error
        )
        # `run_started` comes before the run is journaled: wait for the next event, so the
        # run can be read as soon as its id is answered.
        await self.hub.start(session.run_id, stream, past=_BEFORE_JOURNAL)
        return session.run_id

    async def finished(self, caller: Caller, run_id: str) -> RunRecord:
        """The run's record once this process (or the fleet) stopped driving it. When the
        server is told to stop meanwhile, a run driven here is cancelled (and its record
        answered); a fleet run goes on, and the wait ends: `StoppedWaiting`."""
        if self.fleet:
            await self._wait_fleet(caller, run_id)
        await self.hub.wait(run_id)
        return await self.run(caller, run_id)

    async def _wait_fleet(self, caller: Caller, run_id: str) -> None:
        """Until the fleet stopped advancing the run, or `StoppedWaiting` once the server is
        told to stop (uvicorn runs the app's shutdown only once this request is answered)."""
        try:
            await self.hub.unless_closing(self.agent.wait(run_id))
        except Closing:
            record = await self.run(caller, run_id)
            raise StoppedWaiting(run_id, str(record.status)) from None

    async def approve(
        self,
        caller: Caller,
        run_id: str,
        call_id: str,
        allow: bool,
        args: dict[str, Any] | None,
        reason: str = "",
        *,
        key: str = "",
        edited_only: bool = False,
    ) -> RunStatus:
        """Answer a pending call as the caller (who must be an approver); the run goes on.
        With `key` (the request's `Pending.key`) the answer settles that request or none:
        never a later one for another call with the same id. With `edited_only`, `args` equal
        to the pending call's are no edit (a plain approval). The run's status then
        (`_resume`)."""
        pending = pending_of(await self.answerable(caller, run_id))
        call = pending.call if pending is not None else None
        if edited_only and args is not None and call and same_json(args, call["args"]):
            args = None  # equal as JSON, types too: `true` is no `1`
        if not key and pending is not None and pending.call and pending.key:
            # Unnamed, an answer would settle whatever request of that call id is pending
            # when it arrives: a retried POST could approve a later same-id call.
            raise Invalid(
                f"field 'key' is required: the `pending[].key` of the request you answer "
                f"(GET /v1/runs/{run_id}), so an answer never settles another request"
            )
        answer = BoundApproval(call_id, allow, args, caller.user_id, reason, key=key)
        return await self._resume(run_id, approve=answer)

    async def answerable(self, caller: Caller, run_id: str) -> RunRecord:
        """The run of this agent whose pending call `caller` may answer: her own, or another
        user's that waits for an approval, for an approver; for anyone else Forbidden once
        her own run is found (another's: NotFound)."""
        if not caller.approver:
            await self.run(caller, run_id)  # another user's run: 404, as everywhere
            raise Forbidden(f"user {caller.user_id!r} may not answer approvals (no approver role)")
        # An approver answers any user's run of this agent: the person asked is seldom the
        # one whose run asks (the journal and the audit log name who answered).
        record = await approvers_run(self.store, run_id, caller.user_id, self.agent.name)
        if record is None:
            raise NotFound(f"no run {run_id!r}")
        return record

    async def approvals(self, caller: Caller, *, limit: int, cursor: str | None) -> RunPage:
        """A page of the runs of this agent waiting for an approval, every user's, newest
        first: what an approver is asked (Forbidden without the role)."""
        if not caller.approver:
            raise Forbidden(f"user {caller.user_id!r} may not answer approvals (no approver role)")
        _check_limit(limit)
        return await awaiting_approval(self.store, self.agent.name, limit=limit, cursor=cursor)

    async def resume(self, caller: Caller, run_id: str, value: Any, *, key: str = "") -> RunStatus:
        """Give an interrupted run of the caller's the value it waits for. `key` (the
        question's `Pending.key`) is required while the run asks a keyed question: the value
        answers that question or none, never a later one nobody was shown."""
        record = await self.run(caller, run_id)
        pending = pending_of(record)
        if not key and pending is not None and pending.type and pending.key:
            # Unnamed, a value would answer whatever question is pending when it arrives: a
            # retried POST would answer the next question (the next loop's) unseen.
            raise Invalid(
                f"field 'key' is required: the `pending[].key` of the question you answer "
                f"(GET /v1/runs/{run_id}), so a value never answers another question"
            )
        return await self._resume(run_id, value=BoundValue(value, key) if key else value)

    async def go_on(self, caller: Caller, run_id: str) -> RunStatus:
        """Send a run on without an answer past its approval request whose deadline passed
        (the call is denied as timed out): the owner's run, or any for an approver.
        `AnswerNeeded` while a person may still answer it."""
        if caller.approver:
            record = await self.answerable(caller, run_id)
        else:
            record = await self.run(caller, run_id)
        unanswered(record)
        return await self.send_on(run_id)

    async def send_on(self, run_id: str) -> RunStatus:
        """Resume a run without an answer, here or on the fleet: past an expired approval
        request, the call is denied as timed out (`go_on`, `serve.expiry`)."""
        return await self._resume(run_id)

    async def _resume(self, run_id: str, **answer: Any) -> RunStatus:
        """Go on with a run, answered: here (`running` once its resume holds the run), or on
        the fleet, its answer queued for a worker: its journaled status then, which stays the
        waiting one until a worker takes the answer up."""
        self._open()
        if self.fleet:
            await self.agent.submit_resume(run_id, **answer)
            record = await self.agent.deps.runtime.load_run(run_id)
            if record is None:  # forgotten meanwhile: the answer has nothing to go on with
                raise UnknownRun(run_id)
            return record.status
        if self.hub.driving(run_id):
            raise Conflict(f"run {run_id!r} is running")
        # As for a new run: answered once the resume holds the run's lease, so a follower
        # asking right after the answer follows the resumed run (see `follow_events`).
        await self.hub.start(
            run_id, self.agent.resume_stream(run_id, **answer), past=_BEFORE_JOURNAL
        )
        return RunStatus.RUNNING

    async def fork(
        self,
        caller: Caller,
        run_id: str,
        at: int,
        patch: dict[str, Any] | None,
        *,
        wait: bool = True,
    ) -> dict[str, Any]:
        """A new run from checkpoint `at` of the caller's run, driven in the background like
        any run: here (so `/cancel` stops it, and shutdown cancels it), or with `fleet` by the
        workers (`agent.submit_fork`: a fleet run, recovered like any other if its worker
        dies). Its result once it stopped, or with `wait=False` `{"run_id", "status"}` once
        it started (`queued`, with a fleet). A caller that goes away does not stop it; the
        server told to stop cancels it here, and with a fleet stops waiting for it
        (`StoppedWaiting`). Refused before anything runs: an unknown checkpoint, a patch
        that does not fit, a server shutting down."""
        _, transitions = await self._journal(caller, run_id)
        if at and not any(t.seq == at for t in transitions):
            raise NotFound(f"run {run_id!r} has no checkpoint {at}")
        self._open()
        if self.fleet:
            forked = await self.agent.submit_fork(run_id, at=at, patch=patch)
            if not wait:
                return {"run_id": forked, "status": "queued"}
            await self._wait_fleet(caller, forked)
        else:
            resumer = self.agent.resumer()  # Agent.fork with the events streamed to the hub
            stream = event_stream(
                lambda sink: resumer.fork(sink, run_id, at=at, patch=patch),
                self.agent.deps.hooks.on_event,
            )
            forked = await self.hub.start_new(stream)
            if not wait:
                return {"run_id": forked, "status": "running"}
            await self.hub.wait(forked)
        record = await self.run(caller, forked)
        return record.result or run_json(record, detail=True)

    def _open(self) -> None:
        """Conflict once the server is shutting down: no run starts here then, nor is one
        submitted to the fleet (as a request's answer would then be `StoppedWaiting`)."""
        if self.hub.closing:
            raise Conflict("the server is shutting down; no run starts on it now")

    async def cancel(self, caller: Caller, run_id: str) -> RunRecord:
        """Cancel the caller's run: a run driven here is stopped, a waiting one is closed."""
        record = await self.run(caller, run_id)
        if self.fleet:  # every run, a fork too, is a fleet run: no run is driven here
            try:
                await self.agent.cancel(run_id, by=caller.user_id)
            except RunNotCancellable as err:
                raise Conflict(str(err)) from None
            return await self.run(caller, run_id)
        reason = f"cancelled by {caller.user_id}"
        stopped = await self.hub.cancel(run_id, reason)
        if stopped:
            record = await self.run(caller, run_id)
            if record.status == RunStatus.CANCELLED:
                return record  # the session journaled its own cancellation
            # Stopped before it journaled anything (a resume still taking the run up): the
            # run is as it was, and nobody drives it now, so it is closed below.
        elif record.status == RunStatus.RUNNING:
            raise Conflict(f"run {run_id!r} is driven by another process; cancel it there")
        if record.status.final:
            raise RunFinished(run_id, str(record.status))
        try:
            await cancel_idle(self.agent.deps, run_id, reason)
        except RunNotCancellable as err:
            raise Conflict(str(err)) from None
        except RunFinished:
            raise
        except RunConflict:
            # Taken up since it was read (a resume here or in another process): refused,
            # never overwritten.
            raise Conflict(f"run {run_id!r} is running now; cancel it again to stop it") from None
        self.hub.notify(run_id)
        return await self.run(caller, run_id)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= 500:
        raise BadRequest(f"limit must be 1..500, got {limit}")

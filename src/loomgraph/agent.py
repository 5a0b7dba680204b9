"""`Agent` (a configuration value), `AgentSession` (one run) and `RunResult`."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from loomgraph import nodes as _builtin_nodes  # noqa: F401  (registers the built-in kinds)
from loomgraph.agent_memory import wire_memory
from loomgraph.checkpoints import (
    Checkpoint,
    GraphChanged,
    Position,
    approval,
    history,
    position,
    resume_value,
)
from loomgraph.deps import build_deps, current_run
from loomgraph.events import RUN_COMPLETED, RUN_STARTED, Event
from loomgraph.governance.hooks import Hooks as GovernanceHooks
from loomgraph.governance.null import NoHooks
from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.context import Deps, EventSink, RunScope, active_scope
from loomgraph.graph.interpreter import Outcome, run_graph
from loomgraph.graph.library import load_graph
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import final_output, snapshot_of
from loomgraph.leases import hold_lease
from loomgraph.nodes.structured import (
    DEFAULT_RETRIES,
    FinishNode,
    OutputValidationError,
    StructuredAnswer,
)
from loomgraph.protocols import (
    AuditLog,
    Budget,
    Episode,
    Hooks,
    Memory,
    Model,
    Permissions,
    RunRecord,
    Runtime,
    Telemetry,
    Transition,
    UnknownRun,
    Usage,
)
from loomgraph.result import RunResult

_NO_VALUE: Any = object()
_STREAM_BUFFER = 32  # events a slow consumer may fall behind before the run waits for it
_DONE = object()


class Agent:
    """An agent's configuration: instructions, model, tools, backends and architecture.

    It holds no per-run state: every `run()` / `stream()` builds a fresh `AgentSession`, so one
    Agent serves many users concurrently.
    """

    def __init__(
        self,
        instructions: str = "",
        *,
        model: str | Model,
        memory: str | Memory | None = None,
        tools: Any = None,
        budget: Budget | None = None,
        permissions: Permissions | None = None,
        hooks: Hooks | None = None,
        audit_log: AuditLog | None = None,
        telemetry: Telemetry | None = None,
        runtime: str | Runtime | None = None,
        architecture: str | Path | Graph = "react",
        auto_extract: bool | None = None,
        extract_model: str | Model | None = None,
        memory_tools: bool = False,
        approval_handler: Callable[..., Any] | None = None,
    ) -> None:
        self.instructions = instructions
        self.graph = load_graph(architecture)
        self.compiled: CompiledGraph = compile_graph(self.graph)
        self.deps: Deps = build_deps(
            model=model, memory=memory, tools=tools, runtime=runtime, budget=budget,
            permissions=permissions, hooks=hooks, telemetry=telemetry, audit_log=audit_log,
            approval_handler=approval_handler)
        self.extraction = wire_memory(self, auto_extract=auto_extract,
                                      extract_model=extract_model, with_tools=memory_tools)

    async def aclose(self) -> None:
        """Wait for pending fact extractions, then close the memory and the journal."""
        if self.extraction is not None:
            await self.extraction.drain()
        for backend in (self.deps.memory, self.deps.runtime):
            close = getattr(backend, "close", None)
            if close is not None:
                await close()

    @property
    def hooks(self) -> GovernanceHooks:
        """The agent's hooks, to register with decorators (`@agent.hooks.before_tool`)."""
        if isinstance(self.deps.hooks, NoHooks):  # made on first use: no cost until then
            self.deps.hooks = GovernanceHooks()
        if not isinstance(self.deps.hooks, GovernanceHooks):
            raise TypeError(f"this agent's hooks are a {type(self.deps.hooks).__name__}; "
                            "register on that object instead")
        return self.deps.hooks

    def add_tool(self, fn: Callable[..., Any]) -> None:
        """Offer one more tool to later runs."""
        _mutable_host(self.deps.tools).add(fn)

    def remove_tool(self, name: str) -> None:
        """Stop offering a tool to later runs."""
        _mutable_host(self.deps.tools).remove(name)

    def session(
        self, prompt: str, *, user_id: str | None = None, session_id: str | None = None,
        output_schema: Any = None, output_retries: int = DEFAULT_RETRIES,
    ) -> AgentSession:
        """A fresh session for one run."""
        return AgentSession(self, prompt, user_id=user_id, session_id=session_id,
                            output_schema=output_schema, output_retries=output_retries)

    async def run(
        self, prompt: str, *, user_id: str | None = None, session_id: str | None = None,
        output_schema: Any = None, output_retries: int = DEFAULT_RETRIES,
    ) -> RunResult:
        """Run to the end and return the result (the same as draining `stream()`).

        With `output_schema`, `RunResult.parsed` holds the answer validated into that type;
        an answer that never fits raises `OutputValidationError` (after the run is journaled).
        """
        session = self.session(prompt, user_id=user_id, session_id=session_id,
                               output_schema=output_schema, output_retries=output_retries)
        result = await session.execute(self.deps.hooks.on_event)
        if session.error is not None:
            raise session.error
        return result

    async def stream(
        self, prompt: str, *, user_id: str | None = None, session_id: str | None = None,
        output_schema: Any = None, output_retries: int = DEFAULT_RETRIES,
    ) -> AsyncIterator[Event]:
        """The run's events as they happen; leaving the loop early cancels the run cleanly."""
        session = self.session(prompt, user_id=user_id, session_id=session_id,
                               output_schema=output_schema, output_retries=output_retries)
        queue: asyncio.Queue[Any] = asyncio.Queue(_STREAM_BUFFER)
        on_event = self.deps.hooks.on_event

        async def sink(event: Event) -> None:
            await on_event(event)
            await queue.put(event)

        async def produce() -> RunResult:
            try:
                return await session.execute(sink)
            finally:
                await queue.put(_DONE)  # interrupted by cancel() when the consumer has left

        task = asyncio.create_task(produce())
        try:
            while (item := await queue.get()) is not _DONE:
                yield item
            await task  # surfaces an infrastructure error, if the run raised one
            if session.error is not None:
                raise session.error
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


    # ------------------------------------------------------------------ the journal

    async def _journal(self, run_id: str) -> tuple[RunRecord, list[Transition]]:
        runtime = self.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        return record, await runtime.transitions(run_id)

    async def resume(
        self, run_id: str, *, accept_graph_change: bool = False, value: Any = _NO_VALUE,
        approve: Any = _NO_VALUE,
    ) -> RunResult:
        """Continue an interrupted or crashed run from its journal; finished effects replay.

        `value` answers an `interrupt` node: it is validated against the type the node asked
        for before anything runs, and written to the node's output field. `approve` answers
        a run awaiting approval — True, False, or {"args": edited} (checked against the rules
        again) — and binds to that one pending call.
        """
        record = await self.deps.runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        # An answer is for a waiting run; given to any other, it is refused (not ignored).
        options: dict[str, Any] = {}
        if value is not _NO_VALUE:
            options["resume_value"] = resume_value(record, value)
        if approve is not _NO_VALUE:
            options["approval"] = approval(record, approve)
        if record.status in _FINAL and record.result is not None:
            return RunResult(**record.result)  # a finished run: nothing is executed again
        if record.graph_hash != self.compiled.hash and not accept_graph_change:
            raise GraphChanged(
                f"run {run_id} was made with graph {record.graph_name!r} version "
                f"{record.graph_hash}; this agent has version {self.compiled.hash}. "
                "Pass accept_graph_change=True to resume with the new graph.")
        session = AgentSession(self, _prompt(record), user_id=record.user_id,
                               session_id=record.session_id, run_id=run_id)
        async with hold_lease(self.deps.leases, run_id):
            # Read where the run stands only once it is ours: another worker may have moved
            # it on, or finished it, while this one waited.
            record = await self.deps.runtime.load_run(run_id) or record
            if record.status in _FINAL and record.result is not None:
                return RunResult(**record.result)
            at = position(self.compiled, record, await self.deps.runtime.transitions(run_id))
            return await session.continue_from(self.deps.hooks.on_event, record, at,
                                               new_run=False, options=options)

    async def fork(
        self, run_id: str, *, at: int, patch: dict[str, Any] | None = None
    ) -> RunResult:
        """Start a new run from checkpoint `at` of another run, its state optionally patched."""
        record, transitions = await self._journal(run_id)
        if at and not any(t.seq == at for t in transitions):
            raise ValueError(f"run {run_id} has no checkpoint {at}; it has "
                             f"1..{transitions[-1].seq if transitions else 0}")
        where = position(self.compiled, record, transitions, upto=at)
        if patch:
            self.compiled.schema.apply(where.state, self.compiled.schema.check(dict(patch)))
        session = AgentSession(self, _prompt(record), user_id=record.user_id,
                               session_id=record.session_id)
        forked = session._record(parent_run_id=run_id, parent_seq=at,
                                 initial={"state": snapshot_of(where.state),
                                          "system": (record.initial or {})
                                          .get("system", self.instructions)})
        fresh = Position(where.state, where.visits, where.next_node, 0)
        return await session.continue_from(self.deps.hooks.on_event, forked, fresh,
                                           new_run=True)

    async def history(self, run_id: str) -> list[Checkpoint]:
        """Every transition of a run, with the state after it."""
        record, transitions = await self._journal(run_id)
        return history(self.compiled, record, transitions)

    async def runs(self, user_id: str | None = None) -> list[RunRecord]:
        """The runs in the journal, optionally of one user."""
        return await self.deps.runtime.runs(user_id)


_FINAL = frozenset({"completed", "limit_reached", "budget_exhausted"})





def _prompt(record: RunRecord) -> str:
    return str(((record.initial or {}).get("state") or {}).get("input", ""))


def _mutable_host(host: Any) -> Any:
    if not (hasattr(host, "add") and hasattr(host, "remove")):
        raise TypeError(f"tool host {type(host).__name__} does not support add/remove")
    return host


class AgentSession:
    """One run of an Agent: identity, the event sink, and the run order of the design."""

    def __init__(
        self, agent: Agent, prompt: str, *, user_id: str | None, session_id: str | None,
        output_schema: Any = None, output_retries: int = DEFAULT_RETRIES,
        run_id: str | None = None,
    ) -> None:
        self.agent = agent
        self.prompt = prompt
        self.user_id = user_id
        self.session_id = session_id
        self.finish = FinishNode(StructuredAnswer(output_schema, label="the run's answer"),
                                 retries=output_retries) if output_schema is not None else None
        # An error the caller gets raised after the run is journaled (an unfit answer).
        self.error: OutputValidationError | None = None
        self.run_id = run_id or uuid.uuid4().hex

    def _record(self, **fields: Any) -> RunRecord:
        now = time.time()
        compiled = self.agent.compiled
        return RunRecord(self.run_id, compiled.name, compiled.hash, self.user_id,
                         self.session_id, created_at=now, updated_at=now, **fields)

    async def execute(self, sink: EventSink) -> RunResult:
        """Runtime session → root span → audit → memory seed → interpreter → episode → result."""
        record = self._record()
        async with self._opened(record, sink) as scope:
            state = await self._seed(scope)
            # A copy: the run appends to its own message list in place.
            record.initial = {"state": {"input": state["input"],
                                        "messages": list(state["messages"])},
                              "system": scope.system}
            await self.agent.deps.runtime.start_run(record)
            async with hold_lease(self.agent.deps.leases, self.run_id):
                return await self._drive(scope, state, None, None)

    async def continue_from(
        self, sink: EventSink, record: RunRecord, at: Position, *, new_run: bool,
        options: dict[str, Any] | None = None,
    ) -> RunResult:
        """Go on from a checkpoint: the same run (resume) or a new one (fork)."""
        async with self._opened(record, sink) as scope:
            scope.options.update(options or {})
            scope.system = (record.initial or {}).get("system", self.agent.instructions)
            if new_run:
                await self.agent.deps.runtime.start_run(record)
            else:
                scope.seq = scope.snapshot_seq = at.seq
            scope.model_calls = int((at.state.get("usage") or {}).get("model_calls", 0))
            return await self._drive(scope, at.state, at.next_node, at.visits)

    @contextlib.asynccontextmanager
    async def _opened(self, record: RunRecord, sink: EventSink) -> AsyncIterator[RunScope]:
        deps, compiled = self.agent.deps, self.agent.compiled
        self.started = time.time()
        token = current_run.set(record)
        try:
            attributes = {"loom.run.id": self.run_id, "loom.graph.name": compiled.name,
                          "gen_ai.operation.name": "invoke_agent"}
            if self.session_id is not None:
                attributes["gen_ai.conversation.id"] = self.session_id
            with deps.telemetry.span("loom.run", attributes):
                scope = RunScope(self.run_id, self.user_id, self.session_id, deps, sink)
                active = active_scope.set(scope)
                try:
                    if deps.run_clock is not None:  # the deadline is kept with the run
                        record.deadline = await deps.run_clock.begin_run(
                            scope.budget_scope, started_at=self.started,
                            deadline=record.deadline)
                    await self._audit("run_started", {"graph": compiled.name,
                                                      "graph_hash": compiled.hash})
                    await scope.emit(RUN_STARTED, {"prompt": self.prompt,
                                                   "graph": compiled.name}, None, 0)
                    yield scope
                finally:
                    active_scope.reset(active)
                    if deps.run_clock is not None:
                        await deps.run_clock.end_run(scope.budget_scope)
        finally:
            current_run.reset(token)

    async def _drive(
        self, scope: RunScope, state: dict[str, Any], start: str | None,
        visits: dict[str, int] | None,
    ) -> RunResult:
        deps = self.agent.deps
        try:
            outcome = await run_graph(self.agent.compiled, scope, state, start=start,
                                      visits=visits, finish=self.finish)
        except asyncio.CancelledError:
            await deps.runtime.finish_run(self.run_id, "cancelled", "cancelled by the caller",
                                          None)
            raise
        result = self._result(outcome)
        if result.ok:
            episode = Episode(self.user_id, self.session_id, self.run_id, self.prompt,
                              str(result.output), _tool_names(outcome.state), time.time())
            await deps.memory.remember(episode)
            if self.agent.extraction is not None:
                self.agent.extraction.schedule(episode)
        data = result.to_dict()
        await deps.runtime.finish_run(self.run_id, result.status,  # type: ignore[arg-type]
                                      result.reason, data)
        await self._audit("run_completed", {"status": result.status, "reason": result.reason})
        await scope.emit(RUN_COMPLETED, {"status": result.status, "reason": result.reason,
                                         "output": result.output, "result": data},
                         None, scope.seq)
        return result

    async def _audit(self, action: str, payload: dict[str, Any]) -> None:
        await self.agent.deps.audit_log.record(action, run_id=self.run_id, user_id=self.user_id,
                                               actor="agent", payload=payload)

    async def _seed(self, scope: RunScope) -> dict[str, Any]:
        """The first state: memory's seed in the system prompt, the session's turns, the prompt."""
        memory = self.agent.deps.memory
        seed = await memory.seed(user_id=self.user_id, session_id=self.session_id,
                                 query=self.prompt)
        scope.system = self.agent.instructions + (f"\n\n{seed}" if seed else "")
        history = await memory.history(user_id=self.user_id, session_id=self.session_id)
        return self.agent.compiled.schema.initial({
            "input": self.prompt,
            "messages": [*history, {"role": "user", "content": self.prompt}],
        })

    def _result(self, outcome: Outcome) -> RunResult:
        state = outcome.state
        usage: Usage = dict(state.get("usage") or {})  # type: ignore[assignment]
        result = RunResult(
            output=final_output(state), run_id=self.run_id, session_id=self.session_id,
            user_id=self.user_id, status=outcome.status, reason=outcome.reason,
            turns=int(usage.get("model_calls", 0)), node_visits=dict(outcome.visits),
            usage=usage, pending=outcome.detail or None,
            timings={"started": self.started, "duration_s": time.time() - self.started})
        if self.finish is not None and result.ok:
            result.parsed = self.finish.answer.validate(result.output)
        cause = getattr(outcome.error, "cause", None)
        if isinstance(cause, OutputValidationError):
            self.error = cause
        return result


def _tool_names(state: dict[str, Any]) -> list[str]:
    return [m.get("name", "") for m in state.get("messages") or () if m.get("role") == "tool"]

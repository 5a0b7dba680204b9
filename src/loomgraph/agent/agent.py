"""`Agent` (a configuration value), `AgentSession` (one run) and `RunResult`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from loomgraph.agent.checkpoints import (
    ApprovalUsed,
    Checkpoint,
    GraphChanged,
    Position,
    approval,
    history,
    pending_of,
    position,
    resume_value,
)
from loomgraph.agent.deps import build_deps
from loomgraph.agent.from_file import agent_arguments
from loomgraph.agent.governance_state import check_policy, describe_policy
from loomgraph.agent.leases import hold_lease
from loomgraph.agent.memory_wiring import wire_memory
from loomgraph.agent.recovery import DEFAULT_MAX_RECOVERIES, begin_recovery, reset_recoveries
from loomgraph.agent.result import RunResult
from loomgraph.agent.session import AgentSession
from loomgraph.agent.streaming import event_stream
from loomgraph.authoring.library import load_graph
from loomgraph.engine.effects import EffectKey, ResumeInput
from loomgraph.engine.scope import EventSink
from loomgraph.governance.hooks import Hooks as GovernanceHooks
from loomgraph.governance.null import NoHooks
from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import snapshot_of
from loomgraph.nodes.structured import (
    DEFAULT_RETRIES,
)
from loomgraph.protocols import (
    FINAL_STATUSES,
    AuditLog,
    Budget,
    Deps,
    EffectStatus,
    Hooks,
    Memory,
    Model,
    Permissions,
    RunRecord,
    RunStart,
    Runtime,
    SizeLimits,
    Telemetry,
    Transition,
    UnknownRun,
    close_backend,
)
from loomgraph.protocols.events import Event

_NO_VALUE: Any = object()


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
        max_recoveries: int = DEFAULT_MAX_RECOVERIES,
        max_invalid_tool_args: int = 3,
        size_limits: SizeLimits | None = None,
        name: str = "",
    ) -> None:
        self.name = name
        self.instructions = instructions
        # Resumes of a crashed or failed run before it becomes a dead letter.
        self.max_recoveries = max_recoveries
        self.graph = load_graph(architecture)
        self.compiled: CompiledGraph = compile_graph(self.graph)
        self.deps: Deps = build_deps(
            model=model,
            memory=memory,
            tools=tools,
            runtime=runtime,
            budget=budget,
            permissions=permissions,
            hooks=hooks,
            telemetry=telemetry,
            audit_log=audit_log,
            approval_handler=approval_handler,
            max_invalid_tool_args=max_invalid_tool_args,
            size_limits=size_limits,
        )
        self.extraction = wire_memory(
            self.deps,
            self.add_tool,
            auto_extract=auto_extract,
            extract_model=extract_model,
            with_tools=memory_tools,
        )

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Agent:
        """An Agent from an agent file (docs/agent-files.md); keyword arguments replace what
        the file says (say, `model=ScriptedModel(...)` in tests). Raises AgentFileError
        listing every problem of the file."""
        return cls(**agent_arguments(path, overrides))

    async def aclose(self) -> None:
        """Wait for pending fact extractions, then close the memory, the journal and the
        budget's ledger (through the budget this Agent bound)."""
        if self.extraction is not None:
            await self.extraction.drain()
        for backend in (self.deps.memory, self.deps.runtime, self.deps.budget):
            await close_backend(backend)

    @property
    def hooks(self) -> GovernanceHooks:
        """The agent's hooks, to register with decorators (`@agent.hooks.before_tool`)."""
        if isinstance(self.deps.hooks, NoHooks):  # made on first use: no cost until then
            self.deps.hooks = GovernanceHooks()
        if not isinstance(self.deps.hooks, GovernanceHooks):
            raise TypeError(
                f"this agent's hooks are a {type(self.deps.hooks).__name__}; "
                "register on that object instead"
            )
        return self.deps.hooks

    def add_tool(self, fn: Callable[..., Any]) -> None:
        """Offer one more tool to later runs."""
        _mutable_host(self.deps.tools).add(fn)

    def remove_tool(self, name: str) -> None:
        """Stop offering a tool to later runs."""
        _mutable_host(self.deps.tools).remove(name)

    def session(
        self,
        prompt: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        output_schema: Any = None,
        output_retries: int = DEFAULT_RETRIES,
    ) -> AgentSession:
        """A fresh session for one run."""
        return self._session(
            prompt,
            user_id=user_id,
            session_id=session_id,
            output_schema=output_schema,
            output_retries=output_retries,
        )

    def _session(self, prompt: str, **options: Any) -> AgentSession:
        extraction = self.extraction
        return AgentSession(
            self.compiled,
            self.deps,
            self.instructions,
            prompt,
            on_episode=extraction.schedule if extraction is not None else None,
            **options,
        )

    async def run(
        self,
        prompt: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        output_schema: Any = None,
        output_retries: int = DEFAULT_RETRIES,
    ) -> RunResult:
        """Run to the end and return the result (the same as draining `stream()`).

        With `output_schema`, `RunResult.parsed` holds the answer validated into that type;
        an answer that never fits raises `OutputValidationError` (after the run is journaled).
        """
        session = self.session(
            prompt,
            user_id=user_id,
            session_id=session_id,
            output_schema=output_schema,
            output_retries=output_retries,
        )
        result = await session.execute(self.deps.hooks.on_event)
        if session.error is not None:
            raise session.error
        return result

    def stream(
        self,
        prompt: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        output_schema: Any = None,
        output_retries: int = DEFAULT_RETRIES,
    ) -> AsyncIterator[Event]:
        """The run's events as they happen; leaving the loop early cancels the run cleanly."""
        session = self.session(
            prompt,
            user_id=user_id,
            session_id=session_id,
            output_schema=output_schema,
            output_retries=output_retries,
        )
        return event_stream(session.execute, self.deps.hooks.on_event, lambda: session.error)

    # ------------------------------------------------------------------ the journal

    async def _journal(self, run_id: str) -> tuple[RunRecord, list[Transition]]:
        runtime = self.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        return record, await runtime.transitions(run_id)

    async def resume(
        self,
        run_id: str,
        *,
        accept_graph_change: bool = False,
        value: Any = _NO_VALUE,
        approve: Any = _NO_VALUE,
        override_policy: bool = False,
    ) -> RunResult:
        """Continue an interrupted or crashed run from its journal; finished effects replay.

        `value` answers an `interrupt` node: it is validated against the type the node asked
        for before anything runs, and written to the node's output field. `approve` answers
        a run awaiting approval: an `Approval(call_id, allow, args=edited, approver=...)`
        naming the pending call, or the shorthands True, False, {"args": edited}, which bind to
        that one pending call. Edited arguments meet the rules again. A run is resumed under
        the permission policy it was pinned to; another one is refused (`PolicyChanged`)
        unless `override_policy=True`, which is audited.
        """
        return await self._resume(
            self.deps.hooks.on_event,
            run_id,
            accept_graph_change=accept_graph_change,
            value=value,
            approve=approve,
            override_policy=override_policy,
        )

    def resume_stream(self, run_id: str, **options: Any) -> AsyncIterator[Event]:
        """`resume()` as a stream: the events of the resumed part, shaped as `stream()`'s."""
        return event_stream(
            lambda sink: self._resume(sink, run_id, **options), self.deps.hooks.on_event
        )

    async def _resume(
        self,
        sink: EventSink,
        run_id: str,
        *,
        accept_graph_change: bool = False,
        value: Any = _NO_VALUE,
        approve: Any = _NO_VALUE,
        override_policy: bool = False,
    ) -> RunResult:
        """`resume`, its events going to `sink`."""
        record = await self.deps.runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        answer = await self._answer(record, value, approve)
        if record.status in _FINAL and record.result is not None:
            return RunResult.from_dict(record.result)  # a finished run: nothing is executed again
        if record.graph_hash != self.compiled.hash and not accept_graph_change:
            raise GraphChanged(
                f"run {run_id} was made with graph {record.graph_name!r} version "
                f"{record.graph_hash}; this agent has version {self.compiled.hash}. "
                "Pass accept_graph_change=True to resume with the new graph."
            )
        session = self._session(
            _prompt(record), user_id=record.user_id, session_id=record.session_id, run_id=run_id
        )
        async with hold_lease(self.deps.leases, run_id):
            # Read where the run stands only once it is ours: another worker may have moved
            # it on, or finished it, while this one waited.
            record = await self.deps.runtime.load_run(run_id) or record
            # Checked again under the lease: of two approvals of one call, one wins.
            answer = await self._answer(record, value, approve)
            if record.status in _FINAL and record.result is not None:
                return RunResult.from_dict(record.result)
            changed = check_policy(record, self.deps.permissions, override=override_policy)
            if changed is not None:
                await self.deps.audit_log.record(
                    "policy_override",
                    run_id=run_id,
                    user_id=record.user_id,
                    actor="agent",
                    payload=changed,
                )
            gave_up = await begin_recovery(self.deps.runtime, record, self.max_recoveries)
            if gave_up is not None:  # too many failed recoveries: now a dead letter
                return gave_up
            at = position(self.compiled, record, await self.deps.runtime.transitions(run_id))
            return await session.continue_from(sink, record, at, new_run=False, resume=answer)

    async def _answer(self, record: RunRecord, value: Any, approve: Any) -> ResumeInput | None:
        """The answer a resume brings, checked against what the run waits for: an answer for
        a run that does not wait for it is refused, not ignored."""
        if value is not _NO_VALUE:
            return resume_value(record, value)
        if approve is not _NO_VALUE:
            answer = approval(record, approve)
            await _not_answered(self.deps.runtime, record, answer.call_id)
            return answer
        return None

    async def retry(self, run_id: str, *, accept_graph_change: bool = False) -> RunResult:
        """Resume a dead letter (or any run) with its count of failed recoveries forgotten."""
        await reset_recoveries(self.deps.runtime, run_id)
        return await self.resume(run_id, accept_graph_change=accept_graph_change)

    async def fork(self, run_id: str, *, at: int, patch: dict[str, Any] | None = None) -> RunResult:
        """Start a new run from checkpoint `at` of another run, its state optionally patched."""
        record, transitions = await self._journal(run_id)
        if at and not any(t.seq == at for t in transitions):
            raise ValueError(
                f"run {run_id} has no checkpoint {at}; it has "
                f"1..{transitions[-1].seq if transitions else 0}"
            )
        where = position(self.compiled, record, transitions, upto=at)
        if patch:
            self.compiled.schema.apply(where.state, self.compiled.schema.check(dict(patch)))
        session = self._session(
            _prompt(record), user_id=record.user_id, session_id=record.session_id
        )
        forked = session._record(
            parent_run_id=run_id,
            parent_seq=at,
            initial=RunStart(
                snapshot_of(where.state),
                record.initial.system if record.initial else self.instructions,
                describe_policy(self.deps.permissions),
            ),
        )
        fresh = Position(where.state, where.visits, where.next_node, 0)
        return await session.continue_from(self.deps.hooks.on_event, forked, fresh, new_run=True)

    async def history(self, run_id: str) -> list[Checkpoint]:
        """Every transition of a run, with the state after it."""
        record, transitions = await self._journal(run_id)
        return history(self.compiled, record, transitions)

    async def runs(self, user_id: str | None = None) -> list[RunRecord]:
        """The runs in the journal, optionally of one user."""
        return await self.deps.runtime.runs(user_id)


_FINAL = FINAL_STATUSES


async def _not_answered(runtime: Runtime, record: RunRecord, call_id: str) -> None:
    """Refuse a second approval of one call (say, after a crash right after the first was
    journaled): the first answer stands, and a plain resume goes on with it."""
    pending = pending_of(record)
    if pending is not None and pending.key:
        answer = await runtime.effect(record.run_id, pending.key)
        answered = answer is not None and answer.status == EffectStatus.DONE
    else:  # a run journaled before pending requests named their key
        answered = any(
            EffectKey.is_approval_of(e.key, call_id) and e.status == EffectStatus.DONE
            for e in await runtime.effects(record.run_id)
        )
    if answered:
        raise ApprovalUsed(
            f"call {call_id} of run {record.run_id} was already answered "
            "(approvals are used once); resume without approve= to go on"
        )


def _prompt(record: RunRecord) -> str:
    return record.initial.prompt if record.initial else ""


def _mutable_host(host: Any) -> Any:
    if not (hasattr(host, "add") and hasattr(host, "remove")):
        raise TypeError(f"tool host {type(host).__name__} does not support add/remove")
    return host

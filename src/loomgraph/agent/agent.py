"""`Agent` (a configuration value), `AgentSession` (one run) and `RunResult`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomgraph.agent.arguments import check_text
from loomgraph.agent.defaults import DEFAULT_MAX_RECOVERIES, NO_VALUE
from loomgraph.agent.deps import build_deps
from loomgraph.agent.fleet_methods import FleetMethods
from loomgraph.agent.journal_methods import JournalMethods
from loomgraph.agent.memory_wiring import keeps_episodes, wire_memory
from loomgraph.authoring.library import load_graph
from loomgraph.governance.null import NoHooks
from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.spec import Graph
from loomgraph.nodes.structured import DEFAULT_RETRIES
from loomgraph.protocols import (
    AuditLog,
    Budget,
    Deps,
    Hooks,
    Memory,
    Model,
    Permissions,
    Runtime,
    SizeLimits,
    Telemetry,
    close_backend,
)

_log = logging.getLogger(__name__)

# Running, resuming and reading runs import their modules at first use: building an Agent
# (a configuration value) loads only what checks and wires its configuration.
if TYPE_CHECKING:
    from loomgraph.agent.pinning import GraphChoice
    from loomgraph.agent.result import RunResult
    from loomgraph.agent.resuming import Resumer
    from loomgraph.agent.session import AgentSession
    from loomgraph.governance.hooks import Hooks as GovernanceHooks
    from loomgraph.protocols.events import Event


class Agent(FleetMethods, JournalMethods):
    """An agent's configuration: instructions, model, tools, backends and architecture.

    It holds no per-run state: every `run()` / `stream()` builds a fresh `AgentSession`, so one
    Agent serves many users concurrently. `name` is journaled with each run it starts: an
    Agent of another name may not resume, fork or retry it (`RunOfAnotherAgent`).
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
        tool_deps: Mapping[Any, Any] | None = None,
        name: str = "",
    ) -> None:
        check_text("instructions", instructions)
        check_text("name", name)
        self.name = name
        self.instructions = instructions
        # Resumes of a crashed or failed run before it becomes a dead letter.
        self.max_recoveries = max_recoveries
        self.graph = load_graph(architecture)
        self.compiled: CompiledGraph = compile_graph(self.graph)
        # The graphs runs of this journal started with, compiled from the journal, by hash.
        self._kept: dict[str, CompiledGraph] = {}
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
            tool_deps=tool_deps,
        )
        self.extraction = wire_memory(
            self.deps,
            self.add_tool,
            auto_extract=auto_extract,
            extract_model=extract_model,
            with_tools=memory_tools,
        )
        # Said once: a session id given to an Agent whose memory keeps nothing (`NoMemory`).
        self._session_unkept = not keeps_episodes(self.deps.memory)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Agent:
        """An Agent from an agent file (docs/agent-files.md); keyword arguments replace what
        the file says (say, `model=ScriptedModel(...)` in tests). Raises AgentFileError
        listing every problem of the file."""
        # Imported here: agent files bring YAML and their schema, which a coded agent skips.
        from loomgraph.agent.from_file import agent_arguments

        return cls(**agent_arguments(path, overrides))

    async def aclose(self) -> None:
        """Wait for pending fact extractions, then close the memory, the journal, the
        budget's ledger (through the budget this Agent bound) and the tools (stopping MCP
        servers)."""
        if self.extraction is not None:
            await self.extraction.drain()
        for backend in (self.deps.memory, self.deps.runtime, self.deps.budget):
            await close_backend(backend)
        await self.deps.tools.close()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def hooks(self) -> GovernanceHooks:
        """The agent's hooks, to register with decorators (`@agent.hooks.before_tool`)."""
        # Imported here: an agent whose hooks nobody registers never loads them.
        from loomgraph.governance.hooks import Hooks as GovernanceHooks

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
        run_id: str | None = None,
    ) -> AgentSession:
        """A fresh session for one run. `run_id`: the id of the new run (a fleet worker
        passes the queued run it starts); executing it raises `RunExists` when a run with
        that id is journaled already. A prompt or id of the wrong type is a TypeError."""
        check_text("prompt", prompt)
        for argument, value in (
            ("user_id", user_id),
            ("session_id", session_id),
            ("run_id", run_id),
        ):
            check_text(argument, value, optional=True)
        if session_id is not None and self._session_unkept:
            self._session_unkept = False
            _log.warning(
                "session_id=%r given, but this Agent has no memory (memory=): runs of a "
                "session share nothing, each starts with only its prompt; give memory= (say "
                "memory='sqlite:./memory.db') for later runs to see the session's earlier turns",
                session_id,
            )
        return self._session(
            prompt,
            user_id=user_id,
            session_id=session_id,
            output_schema=output_schema,
            output_retries=output_retries,
            run_id=run_id,
        )

    def _session(
        self, prompt: str, *, compiled: CompiledGraph | None = None, **options: Any
    ) -> AgentSession:
        from loomgraph.agent.session import AgentSession

        extraction = self.extraction
        return AgentSession(
            compiled or self.compiled,
            self.deps,
            self.instructions,
            prompt,
            on_episode=extraction.schedule if extraction is not None else None,
            agent_name=self.name,
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
        from loomgraph.agent.streaming import event_stream

        return event_stream(session.execute, self.deps.hooks.on_event, lambda: session.error)

    async def resume(
        self,
        run_id: str,
        *,
        graph: GraphChoice = "pinned",
        value: Any = NO_VALUE,
        approve: Any = NO_VALUE,
        override_policy: bool = False,
    ) -> RunResult:
        """Continue an interrupted or crashed run from its journal; finished effects replay.

        The run goes on with the graph it started with, as the journal keeps it, even when
        this Agent's graph changed since (`graph="pinned"`). `graph="current"` moves it to
        this Agent's graph, if the run's position (the node it goes on at, the nodes it
        visited, its state fields and their types) is valid there; otherwise `GraphChanged`
        names the node or field and the seq. A moved run stays on its new graph.

        `value` answers an `interrupt` node: it is validated against the type the node asked
        for before anything runs, and written to the node's output field. `approve` answers
        a run awaiting approval: an `Approval(call_id, allow, args=edited, approver=...)`
        naming the pending call, or the shorthands True, False, {"args": edited}, which bind to
        that one pending call. Edited arguments meet the rules again. A run is resumed under
        the permission policy, budget caps and audit log it was pinned to; other ones are
        refused (`PolicyChanged`, `GovernanceChanged`) unless `override_policy=True`, which
        is audited.
        """
        return await self.resumer().resume(
            self.deps.hooks.on_event,
            run_id,
            graph=graph,
            value=value,
            approve=approve,
            override_policy=override_policy,
        )

    def resume_stream(self, run_id: str, **options: Any) -> AsyncIterator[Event]:
        """`resume()` as a stream: the events of the resumed part, shaped as `stream()`'s."""
        from loomgraph.agent.streaming import event_stream

        resumer = self.resumer()
        return event_stream(
            lambda sink: resumer.resume(sink, run_id, **options), self.deps.hooks.on_event
        )

    def resumer(self) -> Resumer:
        """What `resume`, `retry`, `fork` and `cancel` use: for a server that streams a resume's
        events itself, or a fleet worker that holds the run's lease already."""
        from loomgraph.agent.resuming import Resumer

        return Resumer(
            self.deps,
            self.compiled,
            self._kept,
            self._session,
            self.max_recoveries,
            self.instructions,
            self.name,
        )

    async def retry(
        self, run_id: str, *, graph: GraphChoice = "pinned", override_policy: bool = False
    ) -> RunResult:
        """Resume a dead letter (or any run) with its count of failed recoveries forgotten;
        `graph` and `override_policy` as for `resume`. A retry refused (`PolicyChanged`,
        `GovernanceChanged`) forgets nothing: the dead letter stays one."""
        return await self.resumer().retry(
            self.deps.hooks.on_event, run_id, graph=graph, override_policy=override_policy
        )

    async def fork(self, run_id: str, *, at: int, patch: dict[str, Any] | None = None) -> RunResult:
        """Start a new run from checkpoint `at` of another run, its state optionally patched.

        The state is rebuilt with the graph the run started with; the new run goes on with
        this Agent's graph, if that state fits it (else `GraphChanged`).
        """
        return await self.resumer().fork(self.deps.hooks.on_event, run_id, at=at, patch=patch)

    async def send_on_expired(self) -> list[RunResult]:
        """Resume this agent's runs whose approval request expired, the call denied as timed
        out; their results. For a process no server or worker looks for: call it now and
        then (a server and a fleet's workers send such runs on by themselves)."""
        from loomgraph.agent.expired_runs import send_on_expired

        return await send_on_expired(self.deps.runtime, self.name, self.resume)


def _mutable_host(host: Any) -> Any:
    if not (hasattr(host, "add") and hasattr(host, "remove")):
        raise TypeError(f"tool host {type(host).__name__} does not support add/remove")
    return host

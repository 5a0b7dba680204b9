"""`Agent` (a configuration value), `AgentSession` (one run) and `RunResult`."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loomgraph import nodes as _builtin_nodes  # noqa: F401  (registers the built-in kinds)
from loomgraph.deps import build_deps, current_run
from loomgraph.events import RUN_COMPLETED, RUN_STARTED, Event
from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.context import Deps, EventSink, RunScope
from loomgraph.graph.interpreter import Outcome, run_graph
from loomgraph.graph.library import load_graph
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import final_output
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
    Usage,
)

_STREAM_BUFFER = 32  # events a slow consumer may fall behind before the run waits for it
_DONE = object()


@dataclass(slots=True)
class RunResult:
    """How a run ended: its answer, status, usage and timings."""

    output: Any
    run_id: str
    session_id: str | None
    user_id: str | None
    status: str
    reason: str = ""
    parsed: Any = None
    turns: int = 0
    node_visits: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=lambda: Usage())
    timings: dict[str, float] = field(default_factory=dict)
    pending: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-shaped data (what the journal stores)."""
        data = asdict(self)
        if self.parsed is not None and hasattr(self.parsed, "model_dump"):
            data["parsed"] = self.parsed.model_dump(mode="json")
        return data


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
    ) -> None:
        self.instructions = instructions
        self.graph = load_graph(architecture)
        self.compiled: CompiledGraph = compile_graph(self.graph)
        self.deps: Deps = build_deps(
            model=model, memory=memory, tools=tools, runtime=runtime, budget=budget,
            permissions=permissions, hooks=hooks, telemetry=telemetry, audit_log=audit_log)

    def add_tool(self, fn: Callable[..., Any]) -> None:
        """Offer one more tool to later runs."""
        _mutable_host(self.deps.tools).add(fn)

    def remove_tool(self, name: str) -> None:
        """Stop offering a tool to later runs."""
        _mutable_host(self.deps.tools).remove(name)

    def session(
        self, prompt: str, *, user_id: str | None = None, session_id: str | None = None,
        output_schema: Any = None,
    ) -> AgentSession:
        """A fresh session for one run."""
        return AgentSession(self, prompt, user_id=user_id, session_id=session_id,
                            output_schema=output_schema)

    async def run(
        self, prompt: str, *, user_id: str | None = None, session_id: str | None = None,
        output_schema: Any = None,
    ) -> RunResult:
        """Run to the end and return the result (the same as draining `stream()`)."""
        hooks = self.deps.hooks
        return await self.session(prompt, user_id=user_id, session_id=session_id,
                                  output_schema=output_schema).execute(hooks.on_event)

    async def stream(
        self, prompt: str, *, user_id: str | None = None, session_id: str | None = None,
        output_schema: Any = None,
    ) -> AsyncIterator[Event]:
        """The run's events as they happen; leaving the loop early cancels the run cleanly."""
        session = self.session(prompt, user_id=user_id, session_id=session_id,
                               output_schema=output_schema)
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
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _mutable_host(host: Any) -> Any:
    if not (hasattr(host, "add") and hasattr(host, "remove")):
        raise TypeError(f"tool host {type(host).__name__} does not support add/remove")
    return host


class AgentSession:
    """One run of an Agent: identity, the event sink, and the run order of the design."""

    def __init__(
        self, agent: Agent, prompt: str, *, user_id: str | None, session_id: str | None,
        output_schema: Any = None,
    ) -> None:
        self.agent = agent
        self.prompt = prompt
        self.user_id = user_id
        self.session_id = session_id
        self.output_schema = output_schema
        self.run_id = uuid.uuid4().hex

    async def execute(self, sink: EventSink) -> RunResult:
        """Runtime session → root span → audit → memory seed → interpreter → episode → result."""
        agent, deps = self.agent, self.agent.deps
        started = time.time()
        record = RunRecord(self.run_id, agent.compiled.name, agent.compiled.hash, self.user_id,
                           self.session_id, created_at=started, updated_at=started)
        token = current_run.set(record)
        try:
            with deps.telemetry.span("loom.run", {
                "loom.run_id": self.run_id, "loom.graph": agent.compiled.name,
                "gen_ai.conversation.id": self.session_id or "",
            }):
                await deps.runtime.start_run(record)
                scope = RunScope(self.run_id, self.user_id, self.session_id, deps, sink)
                await self._audit("run_started", {"graph": agent.compiled.name,
                                                  "graph_hash": agent.compiled.hash})
                await scope.emit(RUN_STARTED, {"prompt": self.prompt,
                                               "graph": agent.compiled.name}, None, 0)
                state = await self._seed(scope)
                try:
                    outcome = await run_graph(agent.compiled, scope, state)
                except asyncio.CancelledError:
                    await deps.runtime.finish_run(self.run_id, "cancelled", "cancelled by the "
                                                  "caller", None)
                    raise
                result = self._result(outcome, started)
                if result.ok:
                    await deps.memory.remember(Episode(
                        self.user_id, self.session_id, self.run_id, self.prompt,
                        str(result.output), _tool_names(outcome.state), time.time()))
                await deps.runtime.finish_run(self.run_id, result.status,  # type: ignore[arg-type]
                                              result.reason, result.to_dict())
                await self._audit("run_completed", {"status": result.status,
                                                    "reason": result.reason})
                await scope.emit(RUN_COMPLETED, {"status": result.status, "reason": result.reason,
                                                 "output": result.output,
                                                 "result": result.to_dict()}, None, scope.seq)
                return result
        finally:
            current_run.reset(token)

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

    def _result(self, outcome: Outcome, started: float) -> RunResult:
        state = outcome.state
        usage: Usage = dict(state.get("usage") or {})  # type: ignore[assignment]
        result = RunResult(
            output=final_output(state), run_id=self.run_id, session_id=self.session_id,
            user_id=self.user_id, status=outcome.status, reason=outcome.reason,
            turns=int(usage.get("model_calls", 0)), node_visits=dict(outcome.visits),
            usage=usage, pending=outcome.detail or None,
            timings={"started": started, "duration_s": time.time() - started})
        if self.output_schema is not None and result.ok:
            try:
                result.parsed = _parse(self.output_schema, result.output)
            except ValidationError as err:
                result.status, result.reason = "failed", f"output does not fit the schema: {err}"
        return result


def _parse(schema: Any, output: Any) -> Any:
    adapter: TypeAdapter[Any] = TypeAdapter(schema)
    if isinstance(output, str) and schema is not str:
        return adapter.validate_json(output)
    return adapter.validate_python(output)


def _tool_names(state: dict[str, Any]) -> list[str]:
    return [m.get("name", "") for m in state.get("messages") or () if m.get("role") == "tool"]

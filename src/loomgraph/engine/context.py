"""The node context: run identity, the dependency bundle, events, and journaled effects.

Nodes never talk to the journal, the budget or the permission layer themselves: every model
and tool call goes through `NodeContext`, so every node is gated and journaled the same way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from loomgraph.engine.tool_gate import call_tool
from loomgraph.errors import RunStopped
from loomgraph.protocols import (
    AuditLog,
    Budget,
    BudgetScope,
    EffectRecord,
    EffectStatus,
    Hooks,
    Memory,
    Model,
    ModelError,
    ModelRequest,
    ModelResponse,
    Permissions,
    Reservation,
    RunClock,
    RunLeases,
    Runtime,
    Telemetry,
    ToolCall,
    ToolHost,
    ToolResult,
    Usage,
)
from loomgraph.protocols.events import MODEL_CHUNK, Event

if TYPE_CHECKING:
    from loomgraph.graph.spec import Graph

EventSink = Callable[[Event], Awaitable[None]]

# The run the current task works for, so callbacks of shared objects (a budget's warnings)
# can reach the right run's events.
active_scope: ContextVar[RunScope | None] = ContextVar("loomgraph_active_scope", default=None)

# How many times a model step is tried again when its stream broke after it started.
STEP_RETRIES = 2


@dataclass(slots=True)
class Deps:
    """The dependency bundle a run executes against; every field is a protocol."""

    model: Model
    tools: ToolHost
    runtime: Runtime
    memory: Memory
    budget: Budget
    permissions: Permissions
    hooks: Hooks
    telemetry: Telemetry
    audit_log: AuditLog
    # False when the budget has no caps: reservations (and estimating them) are skipped.
    budgeted: bool = True
    # Decides `ask` verdicts in-process: (call, decision) -> True | False | {"args": ...} |
    # None (None: stop the run and wait for `agent.resume(run_id, approve=...)`).
    approval_handler: Callable[..., Any] | None = None
    # The runtime again when it offers leases (checked once: protocol checks are slow).
    leases: RunLeases | None = None
    # The budget again when it follows runs from start to end.
    run_clock: RunClock | None = None


@dataclass(slots=True)
class RunScope:
    """What every node of one run shares: identity, dependencies, the event sink, the seq."""

    run_id: str
    user_id: str | None
    session_id: str | None
    deps: Deps
    sink: EventSink
    system: str = ""
    seq: int = 0
    model_calls: int = 0
    snapshot_seq: int = 0
    budget_scope: BudgetScope = field(init=False)
    # Extra, JSON-shaped values a caller passes to nodes (e.g. the output schema).
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budget_scope = BudgetScope(self.run_id, self.user_id)

    async def reserve(self, kind: str, amount: Usage) -> Reservation | None:
        """Set an amount aside in the budget (nothing to do when the budget has no caps)."""
        if not self.deps.budgeted:
            return None
        return await self.deps.budget.reserve(Reservation(self.budget_scope, kind, amount))  # type: ignore[arg-type]

    async def settle(self, reservation: Reservation | None, actual: Usage) -> None:
        """Replace a reservation by what was spent."""
        if reservation is not None:
            await self.deps.budget.settle(reservation, actual)

    async def release(self, reservation: Reservation | None) -> None:
        """Give a reservation back unspent."""
        if reservation is not None:
            await self.deps.budget.release(reservation)

    async def emit(
        self, kind: str, payload: dict[str, Any], node: str | None, seq: int | None = None
    ) -> None:
        """Send one event; by default it carries the seq of the transition being made."""
        await self.sink(
            Event(
                kind,
                payload,
                self.run_id,
                self.seq + 1 if seq is None else seq,
                node,
                self.user_id,
                self.session_id,
                time.time(),
            )
        )


class NodeContext:
    """What a node gets besides its state: identity, dependencies and journaled helpers."""

    __slots__ = ("_slot", "key_path", "node", "path", "scope", "visit")

    def __init__(
        self, scope: RunScope, node: str, visit: int, path: str = "", key_path: str = ""
    ) -> None:
        self.scope = scope
        self.node = node
        self.visit = visit
        self.path = path
        # Like `path`, with the visit of each enclosing node: a subgraph run twice by one node
        # (two visits, or two map branches) must not share effect keys.
        self.key_path = key_path
        self._slot = 0

    @property
    def deps(self) -> Deps:
        """The dependency bundle."""
        return self.scope.deps

    @property
    def run_id(self) -> str:
        """The id of the run."""
        return self.scope.run_id

    @property
    def user_id(self) -> str | None:
        """The user the run is for."""
        return self.scope.user_id

    @property
    def system(self) -> str:
        """The system prompt: the agent's instructions plus what memory seeded."""
        return self.scope.system

    @property
    def qualified_node(self) -> str:
        """The node's name with its subgraph path, e.g. `plan/execute/model`."""
        return self.path + self.node

    async def emit(self, kind: str, payload: dict[str, Any]) -> None:
        """Send an event from this node."""
        await self.scope.emit(kind, payload, self.qualified_node)

    def take_resume_value(self) -> tuple[bool, Any]:
        """(True, value) when the run was resumed with a value for this node; once only."""
        supplied = self.scope.options.get("resume_value")
        if supplied is None or supplied[0] != self.qualified_node:
            return False, None
        del self.scope.options["resume_value"]
        return True, supplied[1]

    def next_key(self) -> str:
        """The idempotency key of this node visit's next effect (run, node, visit, slot)."""
        self._slot += 1
        return f"{self.scope.run_id}:{self.key_path}{self.node}:{self.visit}:{self._slot}"

    async def _begin(self, key: str, kind: str, intent: dict[str, Any]) -> EffectRecord | None:
        prior = await self.deps.runtime.begin_effect(
            EffectRecord(self.scope.run_id, key, kind, intent)
        )
        if prior is not None and prior.status != "done":
            await self.emit("effect_unknown_after_crash", {"key": key, "kind": kind})
        return prior

    async def _reserve_model(self, request: ModelRequest) -> Reservation | None:
        if not self.deps.budgeted:
            return None
        if request.max_tokens is None:
            # What the adapter will send, so the output can never exceed the reservation.
            request.max_tokens = getattr(self.deps.model, "max_tokens", None)
        return await self.scope.reserve("model", _model_estimate(request))

    # ------------------------------------------------------------------ model

    async def call_model(self, request: ModelRequest) -> ModelResponse:
        """One journaled, budgeted, traced model turn; text chunks are emitted as they come."""
        deps = self.deps
        key = self.next_key()
        request.run_id, request.call_index = self.scope.run_id, self.scope.model_calls
        self.scope.model_calls += 1
        prior = await self._begin(key, "model", {"model": deps.model.name})
        if prior is not None and prior.status == "done" and prior.outcome is not None:
            return _response_from(prior.outcome)
        billed = Usage()  # what broken attempts cost: charged, and counted in the answer's usage
        for attempt in range(STEP_RETRIES + 1):
            reservation = await self._reserve_model(request)
            try:
                response = await self._stream(request)
            except ModelError as err:
                await self.scope.settle(reservation, err.usage)
                if err.retry_step and attempt < STEP_RETRIES:
                    billed += err.usage
                    await self.emit("model_retry", {"error": str(err), "attempt": attempt + 1})
                    continue
                await deps.runtime.end_effect(
                    self.scope.run_id, key, {"error": str(err)}, EffectStatus.FAILED
                )
                raise
            except BaseException:
                await self.scope.release(reservation)
                raise
            await self.scope.settle(reservation, response.usage)
            break
        response.usage += billed
        await deps.runtime.end_effect(
            self.scope.run_id, key, _response_data(response), EffectStatus.DONE
        )
        usage = response.usage.to_dict()
        await self._audit("model_call", {"model": deps.model.name, "usage": usage})
        return response

    async def _stream(self, request: ModelRequest) -> ModelResponse:
        model = self.deps.model
        response = ModelResponse()
        texts: list[str] = []
        with self.deps.telemetry.span(
            f"chat {model.name}",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model.name,
            },
        ) as span:
            async for chunk in model.stream(request):
                kind = chunk.get("type")
                if kind == "text":
                    texts.append(chunk["text"])
                    await self.emit(MODEL_CHUNK, {"chunk": chunk})
                elif kind == "tool_call":
                    response.tool_calls.append(chunk["call"])
                elif kind == "usage":
                    more = chunk["usage"]  # a third-party model may still send a dict
                    response.usage += more if isinstance(more, Usage) else Usage.from_dict(more)
                elif kind == "finish":
                    response.finish_reason = chunk.get("finish_reason", "end_turn")
            response.usage = replace(response.usage, model_calls=1)
            span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
        response.text = "".join(texts)
        return response

    # ------------------------------------------------------------------ tools

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """One journaled, permission-checked, budgeted tool call; failures become error results."""
        return await call_tool(self, call)

    async def _audit(self, action: str, payload: dict[str, Any]) -> None:
        await self.deps.audit_log.record(
            action,
            run_id=self.scope.run_id,
            user_id=self.scope.user_id,
            actor=self.qualified_node,
            payload=payload,
        )

    # ------------------------------------------------------------------ subgraphs

    async def run_subgraph(
        self, graph: Graph, values: Mapping[str, Any], *, branch: str | None = None
    ) -> dict[str, Any]:
        """Run another graph as part of this node; its transitions nest under this node (and
        under `branch`, when one node runs the graph several times)."""
        from loomgraph.engine.interpreter import run_graph
        from loomgraph.graph.compiled import compile_graph

        compiled = compile_graph(graph)
        inner = f"{branch}/" if branch is not None else ""
        outcome = await run_graph(
            compiled,
            self.scope,
            compiled.schema.initial(values),
            path=f"{self.qualified_node}/{inner}",
            key_path=f"{self.key_path}{self.node}.{self.visit}/{inner}",
        )
        if outcome.status != "completed":
            if outcome.error is not None:
                raise outcome.error
            raise RunStopped(outcome.status, outcome.reason, outcome.detail)
        return outcome.state

    async def effect(
        self,
        name: str,
        intent: dict[str, Any],
        run: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run `run` once per run, node visit and `name`: journaled as intent and outcome, and
        replayed from the journal (not run again) when the run is resumed."""
        key = f"{self.scope.run_id}:{self.key_path}{self.node}:{self.visit}:{name}"
        prior = await self._begin(key, name.split(":")[0], intent)
        if prior is not None and prior.status == "done" and prior.outcome is not None:
            return prior.outcome
        outcome = await run()
        await self.deps.runtime.end_effect(self.scope.run_id, key, outcome, EffectStatus.DONE)
        return outcome


def _model_estimate(request: ModelRequest) -> Usage:
    """The worst case of a model call: the prompt's size (≈4 characters a token) + max_tokens."""
    return Usage(
        input_tokens=request.prompt_chars() // 4 + 1,
        output_tokens=request.max_tokens or 4096,
        model_calls=1,
    )  # see _reserve


def _response_data(response: ModelResponse) -> dict[str, Any]:
    return {
        "text": response.text,
        "tool_calls": response.tool_calls,
        "usage": response.usage.to_dict(),
        "finish_reason": response.finish_reason,
    }


def _response_from(data: Mapping[str, Any]) -> ModelResponse:
    return ModelResponse(
        text=data.get("text", ""),
        tool_calls=list(data.get("tool_calls", [])),
        usage=Usage.from_dict(data.get("usage", {}), trusted=True),
        finish_reason=data.get("finish_reason", "end_turn"),
    )

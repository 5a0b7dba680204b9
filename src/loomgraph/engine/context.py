"""The node context: what a node gets besides its state.

Nodes never talk to the journal, the budget or the permission layer themselves: every model
and tool call goes through `NodeContext`, so every node is gated and journaled the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from loomgraph.engine.effects import ANSWER_SLOT, EffectKey, ResumeValue
from loomgraph.engine.model_call import ModelCalls
from loomgraph.engine.own_calls import OwnTool, own_keys_begun
from loomgraph.engine.scope import RunScope
from loomgraph.engine.tool_gate import ToolGate
from loomgraph.graph.compiled import runnable
from loomgraph.graph.node_context import RunnableGraph
from loomgraph.graph.spec import Graph
from loomgraph.protocols import (
    Decision,
    Deps,
    EffectStatus,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from loomgraph.protocols.paths import NodePath


class VisitContext:
    """The `NodeContext` of one node visit: identity, dependencies and journaled helpers."""

    __slots__ = (
        "_models",
        "_slot",
        "key_path",
        "node",
        "path",
        "qualified_node",
        "scope",
        "visit",
    )

    def __init__(
        self, scope: RunScope, node: str, visit: int, path: str = "", key_path: str = ""
    ) -> None:
        self.scope = scope
        self.node = node
        self.visit = visit
        self.path = path
        # The node's name with its subgraph path, e.g. `plan/execute/model`.
        self.qualified_node = path + node
        # Like `path`, with the visit of each enclosing node: a subgraph run twice by one node
        # (two visits, or two map branches) must not share effect keys.
        self.key_path = key_path
        self._slot = 0
        # Its model calls (`models`), made at the first: a visit that calls no model (a tool
        # node's) makes none.
        self._models: ModelCalls | None = None

    @property
    def deps(self) -> Deps:
        """The dependency bundle."""
        return self.scope.deps

    @property
    def models(self) -> ModelCalls:
        """Its model calls, and what they share across the visit's attempts."""
        if self._models is None:
            self._models = ModelCalls(self.scope, self.qualified_node)
        return self._models

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

    async def emit(self, kind: str, payload: dict[str, Any]) -> None:
        """Send an event from this node."""
        await self.scope.emit(kind, payload, self.qualified_node)

    def take_resume_value(self) -> tuple[bool, Any]:
        """(True, value) when the run was resumed with the answer to this visit's question;
        once only."""
        supplied = self.scope.resume
        if not isinstance(supplied, ResumeValue):
            return False, None
        # Matched by the asking visit's key, not the node alone: a value checked against one
        # question never answers a later question of the same node (the next loop's).
        if not supplied.answers(self.qualified_node, self.key_of(ANSWER_SLOT)):
            return False, None
        self.scope.resume = None
        return True, supplied.value

    def effect_key(self, slot: str) -> EffectKey:
        """The key of this node visit's effect named `slot`."""
        return EffectKey(self.scope.run_id, self.key_path + self.node, self.visit, slot)

    def key_of(self, name: str) -> str:
        """The journal key of this visit's effect `name` (what names a question it asks)."""
        return self.effect_key(name).text

    async def recorded(self, name: str) -> dict[str, Any] | None:
        """The outcome of this visit's effect `name` if it finished before; journals nothing."""
        return await self.scope.finished_effect(self.effect_key(name))

    async def unfinished(self, name: str) -> bool:
        """Whether this visit's call effect `name` (under any of its keys, `own_calls`) was
        begun and never finished: it may have run (a crash or a failure in the middle)."""
        for key in own_keys_begun(self.scope, self.effect_key(name)):  # (none: no read)
            effect = await self.scope.deps.runtime.effect(self.scope.run_id, key)
            if effect is not None and effect.status != EffectStatus.DONE:
                return True
        return False

    def count_replayed_model_calls(self, count: int) -> None:
        """Count model calls that replayed work made, so later `call_index`es follow on."""
        self.scope.model_calls += count

    @property
    def numbered_effects(self) -> int:
        """How many model and tool calls this visit has keyed (slots `1` to this)."""
        return self._slot

    def next_key(self) -> EffectKey:
        """The idempotency key of this node visit's next effect (run, node, visit, slot)."""
        self._slot += 1
        # (`effect_key`'s, built here: one call fewer on every model and tool call)
        return EffectKey(self.scope.run_id, self.key_path + self.node, self.visit, str(self._slot))

    # ------------------------------------------------------------------ model

    async def call_model(self, request: ModelRequest) -> ModelResponse:
        """One journaled, budgeted, traced model turn; text chunks are emitted as they come
        (see `engine.model_call`)."""
        models = self._models
        if models is None:  # (made here, not by `models`: no property call on a turn's path)
            models = self._models = ModelCalls(self.scope, self.qualified_node)
        return await models.call(request, self.next_key())

    # ------------------------------------------------------------------ tools

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """One journaled, permission-checked, budgeted tool call; failures become error results."""
        return await ToolGate(self.scope, self.qualified_node).call(call, self.next_key())

    async def call_own(
        self,
        call: ToolCall,
        spec: ToolSpec,
        name: str,
        act: Callable[[ToolCall], Awaitable[ToolResult]],
    ) -> ToolResult:
        """A call the node makes itself, under its effect `name`'s key, as a tool call is made:
        decided, charged, journaled (replayed on resume), hooked, audited; `act` gets the
        call as approved. Its result, or the error result of a refusal."""
        gate = ToolGate(self.scope, self.qualified_node)
        return await gate.call(call, self.effect_key(name), OwnTool(spec, act))

    async def decide_call(
        self, call: ToolCall, spec: ToolSpec, name: str
    ) -> tuple[Decision, ToolCall]:
        """Have a call the node makes itself decided as a tool call is (under its effect
        `name`'s key); the verdict and the call as approved."""
        return await ToolGate(self.scope, self.qualified_node).decide(
            call, spec, self.effect_key(name)
        )

    # ------------------------------------------------------------------ subgraphs

    async def run_subgraph(
        self,
        graph: Graph | RunnableGraph,
        values: Mapping[str, Any],
        *,
        branch: str | None = None,
    ) -> dict[str, Any]:
        """Run another graph as part of this node; its transitions nest under this node (and
        under `branch`, when one node runs the graph several times). Its final state."""
        sep = NodePath.SEPARATOR
        inner = f"{branch}{sep}" if branch is not None else ""
        compiled = runnable(graph)  # a child-graph node's child: compiled once, with it
        path = f"{self.qualified_node}{sep}{inner}"
        state = compiled.schema.initial(values)
        try:
            return await self.scope.run_child(
                compiled,
                self.scope,
                state,
                path=path,
                key_path=f"{self.key_path}{self.node}.{self.visit}{sep}{inner}",
            )
        except BaseException:
            # Cut off too (a time limit cancelled it): what its journaled steps used is in
            # its state, kept as a child graph that ended is (`RunScope.child_usage`).
            self.scope.child_usage[path] = Usage.from_dict(state.get("usage") or {})
            raise

    async def effect(
        self,
        name: str,
        intent: dict[str, Any],
        run: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run `run` once per run, node visit and `name`: journaled as intent and outcome, and
        replayed from the journal (not run again) when the run is resumed."""
        key = self.effect_key(name)
        prior = await self.scope.begin_effect(key, name.split(":")[0], intent, self.qualified_node)
        if isinstance(intent.get("call"), dict):  # a call, as a resume knows it (`restore`):
            self.scope.begun.add(key.text)  # a retry of the visit learns it may have run
        if prior is not None and prior.status == EffectStatus.DONE and prior.outcome is not None:
            return prior.outcome
        outcome = await run()
        await self.scope.end_effect(key, outcome)
        return outcome

"""`NodeContext`: what a node kind may ask of the run it is part of.

Node kinds are written against this protocol, not against the engine: the interpreter hands
each node visit an object that fulfils it (`loomgraph.engine.context.VisitContext`), and
`loomgraph.testing` hands one with fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from loomgraph.graph.spec import Graph
from loomgraph.protocols import (
    Decision,
    Deps,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolResult,
    ToolSpec,
)


class RunnableGraph(Protocol):
    """A graph compiled to run: a `loomgraph.graph.compiled.CompiledGraph` (named by its
    shape: that module imports the node kinds, which import this one)."""

    @property
    def graph(self) -> Graph:
        """The graph as it was compiled (a copy of its own)."""
        ...


class NodeContext(Protocol):
    """What a node gets besides its state: identity, dependencies and journaled helpers."""

    @property
    def node(self) -> str:
        """The node's name in its graph."""
        ...

    @property
    def visit(self) -> int:
        """Which visit of the node this is (1 for the first)."""
        ...

    @property
    def qualified_node(self) -> str:
        """The node's name with its subgraph path, e.g. `plan/execute/model`."""
        ...

    @property
    def run_id(self) -> str:
        """The id of the run."""
        ...

    @property
    def user_id(self) -> str | None:
        """The user the run is for."""
        ...

    @property
    def system(self) -> str:
        """The system prompt: the agent's instructions plus what memory seeded."""
        ...

    @property
    def deps(self) -> Deps:
        """The dependency bundle (read it; effects go through the helpers below)."""
        ...

    async def emit(self, kind: str, payload: dict[str, Any]) -> None:
        """Send an event from this node."""
        ...

    def take_resume_value(self) -> tuple[bool, Any]:
        """(True, value) when the run was resumed with a value for this node; once only."""
        ...

    async def call_model(self, request: ModelRequest) -> ModelResponse:
        """One journaled, budgeted, traced model turn."""
        ...

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """One journaled, permission-checked, budgeted tool call."""
        ...

    async def call_own(
        self,
        call: ToolCall,
        spec: ToolSpec,
        name: str,
        act: Callable[[ToolCall], Awaitable[ToolResult]],
    ) -> ToolResult:
        """A call the node makes itself (a write it does on its own, not a tool of the host's),
        made as `call_tool` makes one, under this visit's effect `name`: decided against
        `spec` (rules, taint, approvals, hooks), charged as a tool call, journaled and
        replayed on resume, heard by `after_tool`, audited and reported; `act` gets the call
        as approved (its arguments maybe edited). Its result, or the error result of a
        refusal."""
        ...

    async def decide_call(
        self, call: ToolCall, spec: ToolSpec, name: str
    ) -> tuple[Decision, ToolCall]:
        """Have a call the node makes itself (a write it does on its own, not `call_tool`)
        decided as a tool call is: the rules, taint, approvals, hooks, reported and audited;
        approvals bound to this visit's effect `name`. The verdict and the call as approved
        (its arguments maybe edited); only an `allow` may be acted on. The decision alone:
        acting on it is the node's own business, not charged or heard by `after_tool` —
        `call_own` makes the whole call."""
        ...

    async def run_subgraph(
        self,
        graph: Graph | RunnableGraph,
        values: Mapping[str, Any],
        *,
        branch: str | None = None,
    ) -> dict[str, Any]:
        """Run another graph as part of this node; its final state. A node that runs one
        graph again and again hands it compiled (`compile_graph`, once, in `bind`); a
        `Graph` is compiled as it reads now."""
        ...

    def key_of(self, name: str) -> str:
        """The journal key of this visit's effect `name` (what names a question it asks)."""
        ...

    async def recorded(self, name: str) -> dict[str, Any] | None:
        """The outcome of this visit's effect `name` if it finished before; journals nothing."""
        ...

    async def unfinished(self, name: str) -> bool:
        """Whether this visit's effect `name`, a call (`call_own`, or `decide_call` then
        `effect` with `{"call": ...}` as its intent), was begun and never finished: it may
        have run."""
        ...

    def count_replayed_model_calls(self, count: int) -> None:
        """Count model calls that replayed work made, so later `call_index`es follow on."""
        ...

    async def effect(
        self,
        name: str,
        intent: dict[str, Any],
        run: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run `run` once per run, node visit and `name`, replayed from the journal on resume."""
        ...

"""The protocols every backend implements, and the plain data they exchange.

Everything that crosses a protocol boundary is JSON-shaped (dicts, lists, str, numbers), so
the same values go into the journal, into events and into Jinja2 conditions without
conversion. This module imports nothing of loomgraph's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from loomgraph.errors import LoomgraphError

# --------------------------------------------------------------------------- messages


class ToolCall(TypedDict):
    """A tool call requested by the model."""

    id: str
    tool: str
    args: dict[str, Any]


class _MessageBase(TypedDict):
    role: Literal["user", "assistant", "tool"]
    content: str


class Message(_MessageBase, total=False):
    """One conversation turn; `tool` messages answer one call each, in call order."""

    tool_calls: list[ToolCall]
    tool_call_id: str
    name: str
    is_error: bool


class Usage(TypedDict, total=False):
    """Token counts and cost of one or more model calls; missing keys count as zero."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    model_calls: int
    tool_calls: int


class ToolSpec(TypedDict, total=False):
    """What the model is told about a tool: name, description and JSON Schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    destructive: bool


class ToolResult(TypedDict, total=False):
    """The outcome of one tool call as the model will see it."""

    content: str
    is_error: bool
    error_type: str


# --------------------------------------------------------------------------- models


class ModelChunk(TypedDict, total=False):
    """One streamed piece of a model turn.

    `type` is `text` (with `text`), `tool_call` (with a complete `call`), `usage` (with
    `usage`) or `finish` (with `finish_reason`).
    """

    type: Literal["text", "tool_call", "usage", "finish"]
    text: str
    call: ToolCall
    usage: Usage
    finish_reason: str


@dataclass(slots=True)
class ModelRequest:
    """Everything a model needs for one turn."""

    messages: Sequence[Message]
    system: str = ""
    tools: Sequence[ToolSpec] = ()
    max_tokens: int | None = None
    tool_choice: str | None = None  # a tool name the model must call, or None for auto
    # Which run asks, and how many model calls the run made before this one (replayed ones
    # included), so a scripted model can answer per run without shared state.
    run_id: str = ""
    call_index: int = 0

    def prompt_chars(self) -> int:
        """How many characters the request sends: system, messages, tool calls, tool specs."""
        total = len(self.system)
        for message in self.messages:
            total += len(message.get("content") or "")
            for call in message.get("tool_calls") or ():
                total += len(call.get("tool", "")) + len(json.dumps(call.get("args") or {}))
        if self.tools:
            total += len(json.dumps(list(self.tools)))
        return total


@dataclass(slots=True)
class ModelResponse:
    """A finished model turn, assembled from its chunks."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: Usage())
    finish_reason: str = "end_turn"

    def to_message(self) -> Message:
        """The assistant message this turn adds to the conversation."""
        message: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


class ModelError(LoomgraphError):
    """A model call failed. Adapters raise subclasses naming the status and request id.

    `retry_step` is true when the whole step may be tried again (a stream that broke after
    it started); `usage` is what the provider already billed for the failed attempt.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_step: bool = False,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.retry_step = retry_step
        self.usage: Usage = usage or Usage()


@runtime_checkable
class Model(Protocol):
    """A chat model that streams its turn as chunks."""

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream one turn."""
        ...


# --------------------------------------------------------------------------- tools


@runtime_checkable
class ToolHost(Protocol):
    """The tools an agent offers, and how they are executed."""

    def specs(self) -> list[ToolSpec]:
        """The tools the model may call."""
        ...

    def spec(self, name: str) -> ToolSpec | None:
        """One tool's spec, or None when no such tool exists."""
        ...

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        """Execute one call; every failure becomes an error result, never an exception."""
        ...


# --------------------------------------------------------------------------- runtime journal

RunStatus = Literal[
    "running",
    "completed",
    "failed",
    "limit_reached",
    "budget_exhausted",
    "interrupted",
    "awaiting_approval",
    "cancelled",
]


@dataclass(slots=True)
class RunRecord:
    """The identity and status of one run, as the journal keeps it."""

    run_id: str
    graph_name: str
    graph_hash: str
    user_id: str | None
    session_id: str | None
    status: RunStatus = "running"
    reason: str = ""
    parent_run_id: str | None = None
    parent_seq: int | None = None
    deadline: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    result: dict[str, Any] | None = None
    # What the run started from: {"state": first state values, "system": system prompt}.
    initial: dict[str, Any] | None = None


@dataclass(slots=True)
class Transition:
    """One step of a run: the node that ran, the patch it made and the edge taken after it."""

    run_id: str
    seq: int
    node: str
    visit: int
    patch: dict[str, Any]
    next_node: str
    usage: Usage
    at: float
    # The whole state after this transition, every few transitions, so a resume or a fork
    # need not replay every patch from the start.
    snapshot: dict[str, Any] | None = None


EffectStatus = Literal["pending", "done", "failed", "unknown_after_crash"]


@dataclass(slots=True)
class EffectRecord:
    """A side effect journaled as intent before and outcome after."""

    run_id: str
    key: str
    kind: str
    intent: dict[str, Any]
    outcome: dict[str, Any] | None = None
    status: EffectStatus = "pending"
    attempts: int = 1


class UnknownRun(LoomgraphError, KeyError):
    """No run with this id is in the journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"unknown run {run_id!r}")
        self.run_id = run_id

    def __str__(self) -> str:
        return str(self.args[0])


@runtime_checkable
class Runtime(Protocol):
    """The journal of runs: transitions as deltas, and side effects as intent/outcome."""

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run."""
        ...

    async def load_run(self, run_id: str) -> RunRecord | None:
        """A run's record, or None."""
        ...

    async def append_transition(self, transition: Transition) -> None:
        """Append one transition; it is durable when this returns."""
        ...

    async def transitions(self, run_id: str) -> list[Transition]:
        """Every transition of a run, in order."""
        ...

    async def begin_effect(self, effect: EffectRecord) -> EffectRecord | None:
        """Journal an intent; return the earlier record when this key was seen before."""
        ...

    async def end_effect(
        self, run_id: str, key: str, outcome: dict[str, Any], status: EffectStatus
    ) -> None:
        """Journal the outcome of an effect."""
        ...

    async def finish_run(
        self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
    ) -> None:
        """Record how a run ended."""
        ...

    async def effects(self, run_id: str) -> list[EffectRecord]:
        """Every effect of a run, in the order they began."""
        ...

    async def runs(self, user_id: str | None = None) -> list[RunRecord]:
        """Runs, oldest first, optionally of one user."""
        ...

    async def close(self) -> None:
        """Let go of connections; the next use opens them again."""
        ...


@runtime_checkable
class RunLeases(Protocol):
    """A journal shared by many workers: a run is advanced by the one holding its lease."""

    lease_seconds: float

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Any:
        """Take the run's lease, or raise when another live owner holds it."""
        ...

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Any:
        """Extend a lease this owner holds, or raise when it was lost."""
        ...

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give the lease back."""
        ...


# --------------------------------------------------------------------------- memory


@dataclass(slots=True)
class Episode:
    """One finished run, as memory keeps it."""

    user_id: str | None
    session_id: str | None
    run_id: str
    prompt: str
    output: str
    tool_calls: list[str] = field(default_factory=list)
    at: float = 0.0


@runtime_checkable
class Memory(Protocol):
    """Long-term memory, partitioned by user."""

    async def seed(self, *, user_id: str | None, session_id: str | None, query: str) -> str:
        """Text to add to the system prompt at the start of a run ('' for nothing)."""
        ...

    async def history(self, *, user_id: str | None, session_id: str | None) -> list[Message]:
        """The earlier turns of this session, oldest first."""
        ...

    async def remember(self, episode: Episode) -> None:
        """Store a finished run."""
        ...

    async def close(self) -> None:
        """Let go of connections; the next use opens them again."""
        ...


# --------------------------------------------------------------------------- governance


@dataclass(slots=True, frozen=True)
class BudgetScope:
    """Whose money a reservation spends."""

    run_id: str
    user_id: str | None


@dataclass(slots=True)
class Reservation:
    """An amount set aside before an effect, settled or released after."""

    scope: BudgetScope
    kind: Literal["model", "tool", "node"]
    amount: Usage
    id: str = ""


class BudgetExceeded(LoomgraphError):
    """A reservation would take a budget past one of its caps."""

    def __init__(self, cap: str, detail: str = "") -> None:
        super().__init__(f"budget cap {cap!r} reached" + (f": {detail}" if detail else ""))
        self.cap = cap
        self.detail = detail


@runtime_checkable
class Budget(Protocol):
    """Reserve the worst case before an effect, settle the actual amount after."""

    async def reserve(self, reservation: Reservation) -> Reservation:
        """Set an amount aside, or raise BudgetExceeded naming the cap."""
        ...

    async def settle(self, reservation: Reservation, actual: Usage) -> None:
        """Replace a reservation by what was actually spent."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Give a reservation back unspent."""
        ...


@runtime_checkable
class RunClock(Protocol):
    """A budget that follows each run from start to end (wall-clock caps, leftover holds)."""

    async def begin_run(
        self,
        scope: BudgetScope,
        *,
        started_at: float | None = None,
        deadline: float | None = None,
    ) -> float | None:
        """Start or resume a run's clock; the run's absolute deadline, if any."""
        ...

    async def end_run(self, scope: BudgetScope) -> None:
        """The run stopped: release what it still holds."""
        ...


Verdict = Literal["allow", "deny", "ask"]


@dataclass(slots=True, frozen=True)
class Decision:
    """A permission verdict and the rule that decided it."""

    verdict: Verdict
    rule: str = ""
    reason: str = ""


@runtime_checkable
class Permissions(Protocol):
    """Decides whether a tool call may run."""

    async def check(
        self, call: ToolCall, spec: ToolSpec | None, *, user_id: str | None
    ) -> Decision:
        """allow, deny or ask for one call."""
        ...


@runtime_checkable
class Hooks(Protocol):
    """User callbacks around nodes, tools and events; `before_tool` may deny, never approve."""

    async def before_node(self, node: str, state: Mapping[str, Any]) -> None:
        """Called before a node runs."""
        ...

    async def after_node(self, node: str, patch: Mapping[str, Any]) -> None:
        """Called after a node returned its patch."""
        ...

    async def before_tool(self, call: ToolCall) -> Decision | None:
        """Return a deny Decision to stop the call; anything else lets it through."""
        ...

    async def after_tool(self, call: ToolCall, result: ToolResult) -> None:
        """Called after a tool call finished."""
        ...

    async def on_event(self, event: Any) -> None:
        """Called for every event of a run."""
        ...


# --------------------------------------------------------------------------- observability


class Span(Protocol):
    """The part of a tracing span loomgraph uses."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Attach one attribute."""
        ...


@runtime_checkable
class Telemetry(Protocol):
    """Opens spans; `loom.run` → node → `chat {model}` / `execute_tool {tool}`."""

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Span]:
        """A span for the duration of a `with` block."""
        ...


@runtime_checkable
class AuditLog(Protocol):
    """An append-only record of what the agent did and who allowed it."""

    async def record(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> None:
        """Append one entry."""
        ...

"""The node context: what a node gets besides its state.

Nodes never talk to the journal, the budget or the permission layer themselves: every model
and tool call goes through `NodeContext`, so every node is gated and journaled the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

from loomgraph.engine import audit_trail as trail
from loomgraph.engine import chat_span
from loomgraph.engine.attempts import MODEL_EFFECT, Handed, ModelAttempts
from loomgraph.engine.effects import ANSWER_SLOT, EffectKey, ResumeValue
from loomgraph.engine.model_answers import (
    broken_usage,
    checked_call,
    reported_usage,
    response_data,
    response_from,
    unreported_usage,
)
from loomgraph.engine.scope import NO_ATTRIBUTES, RunScope
from loomgraph.engine.tool_gate import ToolGate
from loomgraph.errors import ServiceUnavailable
from loomgraph.graph.compiled import runnable
from loomgraph.graph.node_context import RunnableGraph
from loomgraph.graph.spec import Graph
from loomgraph.protocols import (
    AuditAction,
    BudgetExceeded,
    Decision,
    Deps,
    EffectStatus,
    ModelError,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
    semconv,
)
from loomgraph.protocols.events import MODEL_CHUNK, MODEL_RETRY, OUTPUT_VOID, VoidReason
from loomgraph.protocols.paths import NodePath
from loomgraph.protocols.pricing import with_cost

# How many times a model step is tried again when its stream broke after it started.
STEP_RETRIES = 2


class VisitContext:
    """The `NodeContext` of one node visit: identity, dependencies and journaled helpers."""

    __slots__ = (
        "_cut_off",
        "_slot",
        "handed",
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
        # A model call of this visit that streamed chunks and was then cut off (a node timeout
        # cancelled it): voided before the visit's next call, when the node is tried again.
        self._cut_off: str | None = None
        # What the node got back from its calls (`Handed`), once one of this attempt of the
        # visit did not answer; None while every call answers (nothing is recorded then).
        self.handed: Handed | None = None

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
        return self.effect_key(str(self._slot))

    # ------------------------------------------------------------------ model

    async def call_model(self, request: ModelRequest) -> ModelResponse:
        """One journaled, budgeted, traced model turn; text chunks are emitted as they come.

        Every attempt is reserved and charged for what it billed (see `engine.attempts`); the
        answer's usage counts them all, and so does the error of a call that failed."""
        deps = self.scope.deps
        key = self.next_key()
        request.run_id, request.call_index = self.scope.run_id, self.scope.model_calls
        self.scope.model_calls += 1
        if self._cut_off is not None:
            await self._void(self._cut_off, VoidReason.ABANDONED)
            self._cut_off = None
        prior = await self.scope.begin_effect(
            key, MODEL_EFFECT, {"model": deps.model.name}, self.qualified_node
        )
        call_id = key.text
        if prior is not None and prior.status == EffectStatus.DONE and prior.outcome is not None:
            self.scope.failed_usage.pop(call_id, None)  # replayed: its answer counts it
            replayed = response_from(prior.outcome)
            if self.handed is not None:
                self.handed.answered[call_id] = replayed.usage
            return replayed
        attempts = ModelAttempts(self.scope, key)
        if prior is not None:  # run again: what an earlier attempt streamed may have gone out
            if (cut := self.scope.cut_off.pop(call_id, None)) is not None:
                await cut.keep()  # its cut-off attempt journaled first, for `recover`
            await self._void(call_id, VoidReason.RECOVERED)
            await attempts.recover()
            self.scope.failed_usage.pop(call_id, None)  # its answer will count them
        try:
            response = await self._attempt(request, key, attempts)
        except BudgetExceeded as err:  # a retry refused: the failed attempts were charged
            err.usage = attempts.billed
            if attempts.billed:  # kept with the run, as a call that gave up
                await self._kept(key, attempts.billed)
            raise
        answered = response.usage  # the answering attempt's own, held until journaled
        response.usage += attempts.billed
        if self.handed is not None:  # (what the node may report of it)
            self.handed.answered[call_id] = response.usage
        try:
            # Journaled before it is charged: a charge (or its audit entry) that fails must
            # not leave an answered call to be made again on resume (see ToolGate.call).
            await self.scope.end_effect(key, response_data(response))
        finally:
            await attempts.settle(answered)
        if self.scope.auditing:
            done = trail.model_call(
                deps.model.name, request, response, content=self.scope.audit_content
            )
            await self.scope.audit(AuditAction.MODEL_CALL, self.qualified_node, done)
        return response

    async def _attempt(
        self, request: ModelRequest, key: EffectKey, attempts: ModelAttempts
    ) -> ModelResponse:
        """The call's attempts, each reserved first: the first answer, or the error."""
        call_id = key.text
        asked = request.max_tokens  # the caller's own limit; else sized to the caps each try
        for step in range(STEP_RETRIES + 1):
            await attempts.reserve(request, asked)
            if self.scope.audit_writer is not None:  # in the log before the call can act
                await self.scope.audit_written()
            streamed: list[str] = []
            try:
                response = await self._stream(request, call_id, streamed, attempts)
            except ModelError as err:
                usage = (
                    attempts.unanswered(request, streamed)  # what it billed is not known
                    if err.usage_problem
                    else broken_usage(request, err.usage, streamed)
                )
                await attempts.failed(usage, str(err))
                if err.retry_step and step < STEP_RETRIES:
                    await self.emit(MODEL_RETRY, {"error": str(err), "attempt": step + 1})
                    if streamed:
                        await self._void(call_id, VoidReason.RETRY)
                    continue
                # The whole call's, for the run's usage: a call made, whatever it billed.
                err.usage = attempts.gave_up()
                await self._gave_up(key, err, err.usage, streamed)
                raise
            except (BudgetExceeded, ServiceUnavailable) as err:
                # The engine's own refusal (a retry the caps refuse, a ledger or journal out
                # of reach); not the model's failure, whatever class that is.
                if attempts.reservation is not None:  # (the model raised it: it was sent)
                    await attempts.failed(attempts.unanswered(request, streamed), repr(err))
                if streamed:
                    self._cut_off = call_id
                raise
            except Exception as err:
                # The model's own failure (a bug, an SDK error it does not translate, a
                # `ScriptExhausted`): a failed call like any other, charged and audited; its
                # error is raised as it is, carrying no usage.
                await attempts.failed(attempts.unanswered(request, streamed), repr(err))
                await self._gave_up(key, err, attempts.gave_up(), streamed)
                raise
            except BaseException:
                # Cancelled (a time limit, the caller): the request may have been billed, so
                # what the provider reported of it so far (else its prompt) and what it
                # streamed are charged and counted; its attempt is journaled once the visit is
                # known to have failed (`ModelAttempts.cut_off`).
                await attempts.cut_off(attempts.unanswered(request, streamed))
                if streamed:  # no event now: the run may be cancelled, its consumer gone
                    self._cut_off = call_id
                raise
            if self.scope.deps.budgeted:  # (without caps there is no ledger to agree with)
                response.usage = attempts.priced(response.usage)
            return response  # its attempt is settled once the answer is journaled
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _gave_up(
        self, key: EffectKey, err: BaseException, billed: Usage, streamed: list[str]
    ) -> None:
        """A call that failed for good: its effect journaled failed, audited, output void;
        what it was charged kept with the run (`failed_usage`): no patch carries it."""
        await self._kept(key, billed)
        await self.scope.end_effect(key, {"error": str(err)}, EffectStatus.FAILED)
        if self.scope.auditing:
            content = self.scope.audit_content
            failed = trail.model_call_failed(self.deps.model.name, err, billed, content=content)
            await self.scope.audit(AuditAction.MODEL_CALL, self.qualified_node, failed)
        if streamed:
            await self._void(key.text, VoidReason.FAILED)

    async def _kept(self, key: EffectKey, billed: Usage) -> None:
        """Keep what a call that did not answer was charged with the run, by its key: the
        engine counts it, whatever the node does with its error (`Handed`)."""
        self.scope.failed_usage[key.text] = billed
        if self.handed is None:  # (set before the read: a call answering meanwhile adds to it)
            self.handed = Handed()
            await self.handed.read_earlier(self.scope, key)
        self.handed.unanswered += billed

    async def _void(self, call_id: str, reason: VoidReason) -> None:
        """Tell the consumer that the chunks `call_id` streamed so far stand for nothing."""
        await self.emit(OUTPUT_VOID, {"call_id": call_id, "reason": reason.value})

    async def _stream(
        self, request: ModelRequest, call_id: str, texts: list[str], attempts: ModelAttempts
    ) -> ModelResponse:
        deps, tracing = self.scope.deps, self.scope.tracing
        model, telemetry = deps.model, deps.telemetry
        response = ModelResponse()
        attributes: Mapping[str, Any] = NO_ATTRIBUTES
        answered: Mapping[str, Any] = NO_ATTRIBUTES  # the usage chunk: the answer's id, model
        # Content is serialised only when it will be kept (capture_content=True).
        capture = tracing and bool(getattr(telemetry, "capture_content", False))
        if tracing:
            attributes = chat_span.asked(model, request, self.scope.session_id, capture)
        with telemetry.span(semconv.chat_span_name(model.name), attributes) as span:
            attempts.stream = model.stream(request)  # (what it reported, if it is cut off)
            async with aclosing(attempts.stream) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    kind = chunk.get("type")
                    if kind == "text":
                        texts.append(chunk["text"])
                        # Provisional until the call's outcome is journaled (docs/runtime.md).
                        if self.scope.listening:
                            await self.emit(
                                MODEL_CHUNK,
                                {"chunk": chunk, "call_id": call_id, "provisional": True},
                            )
                    elif kind == "tool_call":
                        call = checked_call(chunk.get("call"), request, texts, response.tool_calls)
                        response.tool_calls.append(call)
                    elif kind == "usage":
                        response.usage += reported_usage(chunk["usage"], request, texts)
                        answered = chunk
                    elif kind == "finish":
                        response.finish_reason = chunk.get("finish_reason", "end_turn")
                    elif kind == "attempt":
                        # The ledger counts the attempt's model call from its reservation.
                        billed = reported_usage(chunk.get("usage"), request, texts)
                        await attempts.retried(billed, chunk.get("error", ""))
                        await self.emit(
                            MODEL_RETRY, {"error": chunk.get("error", ""), "provider": True}
                        )
            # A count the model did not report (any model: an adapter's partial report, a
            # third-party model's none) is charged what it was sent and said, and priced
            # again the way the model prices its own (its name in the price table, and its
            # `prices` override when it has one).
            usage = unreported_usage(request, texts, response)
            if usage is not response.usage:
                usage = with_cost(model.name, usage, getattr(model, "prices", None))
            response.usage = usage.with_model_calls(1)
            response.text = "".join(texts)
            if not tracing:
                return response
            semconv.set_attributes(span, chat_span.answered(response, answered, capture))
        return response

    # ------------------------------------------------------------------ tools

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """One journaled, permission-checked, budgeted tool call; failures become error results."""
        return await ToolGate(self.scope, self.qualified_node).call(call, self.next_key())

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
        if prior is not None and prior.status == EffectStatus.DONE and prior.outcome is not None:
            return prior.outcome
        outcome = await run()
        await self.scope.end_effect(key, outcome)
        return outcome

"""The model calls of one node visit: journaled, budgeted, traced, a broken stream tried again.

Every attempt of a call is reserved and charged for what it billed (`engine.attempts`) and
runs in a `chat` span of its own, which ends with what the attempt was charged however it
ended (answered, failed, cut off): the spans, and the token and cost metrics derived from
them, count what the run's usage and the ledger do.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

from loomgraph.engine import audit_trail as trail
from loomgraph.engine import chat_span
from loomgraph.engine.attempts import MODEL_EFFECT, Handed, ModelAttempts
from loomgraph.engine.effects import EffectKey
from loomgraph.engine.model_answers import (
    checked_call,
    reported_usage,
    response_data,
    response_from,
    unreported_usage,
)
from loomgraph.engine.scope import NO_ATTRIBUTES, RunScope
from loomgraph.errors import ServiceUnavailable
from loomgraph.protocols import (
    AuditAction,
    BudgetExceeded,
    EffectStatus,
    ModelError,
    ModelRequest,
    ModelResponse,
    Usage,
    semconv,
)
from loomgraph.protocols.events import MODEL_CHUNK, MODEL_RETRY, OUTPUT_VOID, VoidReason
from loomgraph.protocols.pricing import with_cost

# How many times a model step is tried again when its stream broke after it started.
STEP_RETRIES = 2


class ModelCalls:
    """The model calls of one node visit (`node`: its name with its subgraph path)."""

    __slots__ = ("cut_off", "handed", "node", "scope")

    def __init__(self, scope: RunScope, node: str) -> None:
        self.scope = scope
        self.node = node
        # A model call of this visit that streamed chunks and was then cut off (a node timeout
        # cancelled it): voided before the visit's next call, when the node is tried again.
        self.cut_off: str | None = None
        # What the node got back from its calls (`Handed`), once one of this attempt of the
        # visit did not answer; None while every call answers (nothing is recorded then).
        self.handed: Handed | None = None

    async def call(self, request: ModelRequest, key: EffectKey) -> ModelResponse:
        """One journaled, budgeted, traced model turn under `key`; text chunks are emitted as
        they come.

        Every attempt is reserved and charged for what it billed (see `engine.attempts`); the
        answer's usage counts them all, and so does the error of a call that failed."""
        scope = self.scope
        deps = scope.deps
        request.run_id, request.call_index = scope.run_id, scope.model_calls
        scope.model_calls += 1
        if self.cut_off is not None:
            await self._void(self.cut_off, VoidReason.ABANDONED)
            self.cut_off = None
        prior = await scope.begin_effect(key, MODEL_EFFECT, {"model": deps.model.name}, self.node)
        call_id = key.text
        if prior is not None and prior.status == EffectStatus.DONE and prior.outcome is not None:
            scope.failed_usage.pop(call_id, None)  # replayed: its answer counts it
            scope.replayed.add(call_id)  # (and a crash charge of that execution is not)
            replayed = response_from(prior.outcome)
            if self.handed is not None:
                self.handed.answered[call_id] = replayed.usage
            return replayed
        attempts = ModelAttempts(scope, key, 1 if prior is None else prior.attempts)
        if prior is not None:  # run again: what an earlier attempt streamed may have gone out
            if (cut := scope.cut_off.pop(call_id, None)) is not None:
                await cut.keep()  # its cut-off attempt journaled first, for `recover`
            await self._void(call_id, VoidReason.RECOVERED)
            await attempts.recover()
            scope.failed_usage.pop(call_id, None)  # its answer will count them
        try:
            response = await self._attempts(request, key, attempts)
        except BudgetExceeded as err:  # a retry refused: the failed attempts were charged
            if attempts.billed:  # a call made, that gave up: counted as one, kept with the run
                err.usage = attempts.gave_up()
                await self._kept(key, err.usage)
            else:  # refused before any attempt: no call was made
                err.usage = attempts.billed
            raise
        answered = response.usage  # the answering attempt's own, held until journaled
        response.usage += attempts.billed
        if self.handed is not None:  # (what the node may report of it)
            self.handed.answered[call_id] = response.usage
        try:
            # Journaled before it is charged: a charge (or its audit entry) that fails must
            # not leave an answered call to be made again on resume (see ToolGate.call).
            await scope.end_effect(key, response_data(response))
        finally:
            await attempts.settle(answered)
        if scope.auditing:
            done = trail.model_call(deps.model.name, request, response, content=scope.audit_content)
            await scope.audit(AuditAction.MODEL_CALL, self.node, done)
        return response

    async def _attempts(
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
                # Its attempt is settled once the answer is journaled.
                return await self._traced(request, call_id, streamed, attempts)
            except ModelError as err:  # charged (`ModelAttempts.ended`), as are all below
                if err.retry_step and step < STEP_RETRIES:
                    await self._emit(MODEL_RETRY, {"error": str(err), "attempt": step + 1})
                    if streamed:
                        await self._void(call_id, VoidReason.RETRY)
                    continue
                # The whole call's, for the run's usage: a call made, whatever it billed.
                err.usage = attempts.gave_up()
                await self._gave_up(key, err, err.usage, streamed)
                raise
            except (BudgetExceeded, ServiceUnavailable):
                # The engine's own refusal, not the model's failure: not a call that gave up.
                if streamed:
                    self.cut_off = call_id
                raise
            except Exception as err:
                # The model's own failure: a failed call like any other, audited; its error
                # is raised as it is, carrying no usage.
                await self._gave_up(key, err, attempts.gave_up(), streamed)
                raise
            except BaseException:
                # Cancelled: its attempt is journaled once the visit is known to have failed
                # (`ModelAttempts.cut_off`).
                if streamed:  # no event now: the run may be cancelled, its consumer gone
                    self.cut_off = call_id
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _traced(
        self, request: ModelRequest, call_id: str, texts: list[str], attempts: ModelAttempts
    ) -> ModelResponse:
        """One attempt in its chat span: charged however it ends, in the span (`attempts.spent`
        says what it was charged for the span and the ledger alike, but for an answer's own
        usage, added here)."""
        scope = self.scope
        model, telemetry, tracing = scope.deps.model, scope.deps.telemetry, scope.tracing
        attributes: Mapping[str, Any] = NO_ATTRIBUTES
        # Content is serialised only when it will be kept (capture_content=True).
        capture = tracing and bool(getattr(telemetry, "capture_content", False))
        if tracing:
            attributes = chat_span.asked(model, request, scope.session_id, capture)
        with telemetry.span(semconv.chat_span_name(model.name), attributes) as span:
            try:
                response, usage_chunk = await self._stream(request, call_id, texts, attempts)
            except BaseException as err:
                await attempts.ended(err, request, texts)
                if tracing:
                    semconv.set_attributes(span, chat_span.charged(attempts.spent))
                raise
            # Priced as the ledger will charge it, when the model reported no cost (without
            # caps there is no ledger to agree with); settled once the answer is journaled.
            if scope.deps.budgeted:
                response.usage = attempts.priced(response.usage)
            if tracing:  # the attempt's charge: its answer, and the model's own retries in it
                spent = attempts.spent + response.usage
                done = chat_span.answered(response, spent, usage_chunk, capture)
                semconv.set_attributes(span, done)
        return response

    async def _stream(
        self, request: ModelRequest, call_id: str, texts: list[str], attempts: ModelAttempts
    ) -> tuple[ModelResponse, Mapping[str, Any]]:
        """The model's answer to one attempt, and its usage chunk (the answer's id, model)."""
        model = self.scope.deps.model
        response = ModelResponse()
        answered: Mapping[str, Any] = NO_ATTRIBUTES
        attempts.stream = model.stream(request)  # (what it reported, if it is cut off)
        async with aclosing(attempts.stream) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                kind = chunk.get("type")
                if kind == "text":
                    texts.append(chunk["text"])
                    # Provisional until the call's outcome is journaled (docs/runtime.md).
                    if self.scope.listening:
                        await self._emit(
                            MODEL_CHUNK, {"chunk": chunk, "call_id": call_id, "provisional": True}
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
                    await self._emit(
                        MODEL_RETRY, {"error": chunk.get("error", ""), "provider": True}
                    )
        # A count the model did not report (any model: an adapter's partial report, a
        # third-party model's none) is charged what it was sent and said, and priced again
        # the way the model prices its own (its name in the price table, and its `prices`
        # override when it has one).
        usage = unreported_usage(request, texts, response)
        if usage is not response.usage:
            usage = with_cost(model.name, usage, getattr(model, "prices", None))
        response.usage = usage.with_model_calls(1)
        response.text = "".join(texts)
        return response, answered

    async def _gave_up(
        self, key: EffectKey, err: BaseException, billed: Usage, streamed: list[str]
    ) -> None:
        """A call that failed for good: its effect journaled failed, audited, output void;
        what it was charged kept with the run (`failed_usage`): no patch carries it."""
        scope = self.scope
        await self._kept(key, billed)
        await scope.end_effect(key, {"error": str(err)}, EffectStatus.FAILED)
        if scope.auditing:
            content = scope.audit_content
            failed = trail.model_call_failed(scope.deps.model.name, err, billed, content=content)
            await scope.audit(AuditAction.MODEL_CALL, self.node, failed)
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
        await self._emit(OUTPUT_VOID, {"call_id": call_id, "reason": reason.value})

    async def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        await self.scope.emit(kind, payload, self.node)

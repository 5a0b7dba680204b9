"""The attempts of one model call: each is reserved, charged for what it billed, journaled.

A model call may take several attempts: the model's own retries of an attempt that failed
before it streamed anything (an `attempt` chunk, see `loomgraph.models.retry`) and the
step retries of a stream that broke after it started. Each attempt has a reservation of its
own (so the caps are checked again before every retry), is settled with what it billed, and
a failed one is journaled as a `model_attempt` effect of its own, finished with status
`failed`, under the call's key plus `.attempt<N>`.
"""

from __future__ import annotations

from loomgraph.engine.effects import EffectKey
from loomgraph.engine.model_answers import model_estimate
from loomgraph.engine.scope import RunScope
from loomgraph.protocols import EffectRecord, EffectStatus, ModelRequest, Reservation, Usage
from loomgraph.protocols.usage import estimate_prompt_tokens

ATTEMPT_KIND = "model_attempt"


class ModelAttempts:
    """The reservation in force for a model call and what its failed attempts billed."""

    __slots__ = ("_amount", "_number", "billed", "key", "recovered_calls", "reservation", "scope")

    def __init__(self, scope: RunScope, key: EffectKey) -> None:
        self.scope = scope
        self.key = key
        self.reservation: Reservation | None = None
        self.billed = Usage()  # what failed attempts billed, all charged already
        self.recovered_calls = 0  # the model calls of earlier executions' failed attempts
        self._amount = Usage()
        self._number = 0

    async def reserve(self, request: ModelRequest, asked: int | None) -> None:
        """Hold the worst case of the next attempt (BudgetExceeded when it does not fit).
        Without caps nothing is held, and the prompt is not measured (a walk over the whole
        conversation). Without the caller's own limit (`asked`), the output is sized to the
        caps (a budget with `fit_output`) and sent to the provider as max_tokens, so it can
        never exceed the reservation."""
        scope = self.scope
        deps = scope.deps
        if not deps.budgeted:
            self.reservation = None
            return
        if asked is None:
            limit = getattr(deps.model, "max_tokens", None)
            fit = getattr(deps.budget, "fit_output", None)
            prompt = estimate_prompt_tokens(request.prompt_chars())
            request.max_tokens = (
                limit if fit is None else await fit(scope.budget_scope, prompt, limit)
            )
        self._amount = model_estimate(request)
        self.reservation = await scope.reserve("model", self._amount)

    async def settle(self, usage: Usage) -> None:
        """Charge the attempt in force `usage` (what it billed)."""
        reservation, self.reservation = self.reservation, None
        await self.scope.settle(reservation, usage)

    async def failed(self, usage: Usage, error: str) -> None:
        """An attempt failed after billing `usage`: charge it and journal it."""
        await self.settle(usage)
        self.billed += usage
        await self._journal(usage, error)

    async def retried(self, usage: Usage, error: str) -> None:
        """The model retries an attempt itself: charge and journal the failed one, then hold
        the same worst case for the next (BudgetExceeded when the caps have no room left)."""
        await self.failed(usage, error)
        self.reservation = await self.scope.reserve("model", self._amount)

    async def recover(self) -> None:
        """The call runs again after a crash: count what the crashed execution's failed
        attempts billed (charged then, journaled), and number the next attempts after them."""
        runtime, run_id = self.scope.deps.runtime, self.scope.run_id
        while (found := await runtime.effect(run_id, self._key(self._number + 1))) is not None:
            self._number += 1
            if found.outcome is not None:
                earlier = Usage.from_dict(found.outcome.get("usage", {}), trusted=True)
                self.billed += earlier
                self.recovered_calls += earlier.model_calls

    def gave_up(self) -> Usage:
        """What a call that failed for good used: what its attempts billed, this execution
        counted as one model call at least, and each earlier execution's as it was (a node
        retried, a resume: each made the call again, and each was charged)."""
        calls = max(self.billed.model_calls, self.recovered_calls + 1)
        return self.billed.with_model_calls(calls)

    def _key(self, number: int) -> str:
        k = self.key
        return str(EffectKey(self.scope.run_id, k.path, k.visit, f"{k.slot}.attempt{number}"))

    async def _journal(self, usage: Usage, error: str) -> None:
        runtime, run_id = self.scope.deps.runtime, self.scope.run_id
        self._number += 1
        key = self._key(self._number)
        outcome = {"attempt": self._number, "error": error, "usage": usage.to_dict()}
        await runtime.begin_effect(EffectRecord(run_id, key, ATTEMPT_KIND, {"of": str(self.key)}))
        await runtime.end_effect(run_id, key, outcome, EffectStatus.FAILED)

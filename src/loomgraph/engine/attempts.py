"""The attempts of one model call: each is reserved, charged for what it billed, journaled.

A model call may take several attempts: the model's own retries of an attempt that failed
before it streamed anything (an `attempt` chunk, see `loomgraph.models.retry`) and the
step retries of a stream that broke after it started. Each attempt has a reservation of its
own (so the caps are checked again before every retry), is settled with what it billed, and
a failed one is journaled as a `model_attempt` effect of its own, finished with status
`failed`, under the call's key plus `.attempt<N>`. An attempt cut off by a cancellation (its
node's `timeout`, the run's deadline) is charged at once and journaled the same way once its
visit is known to have failed (`keep`, from `engine.kept_usage`).

What an attempt is charged, however it ends (answered, failed, cut off), is also what its
`chat` span reports (`spent`, plus the answer's usage), so the token and cost metrics count
what the ledger does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from loomgraph.engine.effects import EffectKey
from loomgraph.engine.model_answers import broken_usage, model_estimate, streamed_tokens
from loomgraph.engine.scope import RunScope
from loomgraph.errors import ServiceUnavailable
from loomgraph.protocols import (
    BudgetExceeded,
    EffectRecord,
    EffectStatus,
    ModelChunk,
    ModelError,
    ModelRequest,
    Reservation,
    Usage,
)
from loomgraph.protocols.governance import EffectRef
from loomgraph.protocols.usage import estimate_prompt_tokens, floor_usage

# The kind a model call's effect is journaled as, and the kind of each failed attempt's.
MODEL_EFFECT = "model"
ATTEMPT_KIND = "model_attempt"
# The error a cut-off attempt is journaled with.
CUT_OFF = "cut off: its node's time limit or the run's deadline passed"
# Nothing used: Usage is frozen, so one instance serves every call (no construction a turn).
NO_USAGE = Usage()


class ModelAttempts:
    """The reservation in force for a model call and what its failed attempts billed."""

    __slots__ = (
        "_amount",
        "_cut",
        "_number",
        "billed",
        "effect",
        "key",
        "recovered_calls",
        "reservation",
        "scope",
        "spent",
        "stream",
    )

    def __init__(self, scope: RunScope, key: EffectKey, execution: int = 1) -> None:
        self.scope = scope
        self.key = key
        # The execution of the call's effect its holds are for (a resume's is the journal's
        # `attempts`): a hold a crash leaves is charged under it. No budget, no holds.
        budgeted = scope.deps.budgeted
        self.effect = EffectRef(key.text, execution) if budgeted else None
        self.reservation: Reservation | None = None
        self.billed = NO_USAGE  # what failed attempts billed, all charged already
        self.recovered_calls = 0  # the model calls of earlier executions' failed attempts
        # The model's stream for the attempt in force: what it reported, if it is cut off.
        self.stream: AsyncIterator[ModelChunk] | None = None
        # What the attempt in force was charged but for its answer (the model's own retries
        # within it; all of it, once it failed or was cut off): what its chat span reports,
        # with the answer's usage added there (traced runs only: the span is its one reader).
        self.spent = NO_USAGE
        self._amount = NO_USAGE
        self._number = 0
        self._cut = NO_USAGE  # what the attempt a cancellation cut off was charged, until kept

    async def reserve(self, request: ModelRequest, asked: int | None) -> None:
        """Hold the worst case of the next attempt (BudgetExceeded when it does not fit).
        Without caps nothing is held, and the prompt is not measured (a walk over the whole
        conversation). Without the caller's own limit (`asked`), the output is sized to the
        caps (a budget with `fit_output`) and sent to the provider as max_tokens, so it can
        never exceed the reservation."""
        scope = self.scope
        deps = scope.deps
        self.stream = None  # a new attempt: nothing of it heard yet
        self.spent = NO_USAGE
        if not deps.budgeted:
            self.reservation = None
            return
        if asked is None:
            limit = getattr(deps.model, "max_tokens", None)
            fit = getattr(deps.budget, "fit_output", None)
            prompt = estimate_prompt_tokens(request.prompt_chars())
            request.max_tokens = (
                limit
                if fit is None
                else await fit(scope.budget_scope, prompt, limit, effect=self.effect)
            )
        self._amount = model_estimate(request)
        self.reservation = await scope.reserve("model", self._amount, self.effect)

    def unanswered(self, request: ModelRequest, streamed: list[str]) -> Usage:
        """What the attempt in force used when it ends with no account of its own (cancelled,
        or a failure that carries none): what the provider reported of it so far (when its
        stream tells, `ReportingStream`), the prompt's estimate when that named no prompt
        tokens, and at least what it streamed."""
        usage = floor_usage(
            _reported(self.stream),
            prompt_tokens=estimate_prompt_tokens(request.prompt_chars()),
            output_tokens=streamed_tokens(request, streamed),
        )
        return usage.with_model_calls(1)

    async def settle(self, usage: Usage) -> None:
        """Charge the attempt in force `usage` (what it billed)."""
        reservation, self.reservation = self.reservation, None
        await self.scope.settle(reservation, usage)

    async def failed(self, usage: Usage, error: str) -> None:
        """An attempt failed after billing `usage`: charge it and journal it."""
        usage = self.priced(usage)
        await self.settle(usage)
        self.billed += usage
        self.spent += usage
        await self._journal(usage, error)

    async def ended(self, err: BaseException, request: ModelRequest, streamed: list[str]) -> None:
        """Charge the attempt in force that `err` ended, by what ended it: what it billed, or
        its estimate when that is not known; a cancel's at once (`cut_off`)."""
        if isinstance(err, ModelError):
            usage = (
                self.unanswered(request, streamed)  # what it billed is not known
                if err.usage_problem
                else broken_usage(request, err.usage, streamed)
            )
            await self.failed(usage, str(err))
        elif isinstance(err, BudgetExceeded | ServiceUnavailable):
            # The engine's own refusal (a retry the caps refuse, a ledger or journal out of
            # reach); not the model's failure, whatever class that is. Charged only when the
            # model raised it (its reservation still held: it was sent).
            if self.reservation is not None:
                await self.failed(self.unanswered(request, streamed), repr(err))
        elif isinstance(err, Exception):
            # The model's own failure (a bug, an SDK error it does not translate, a
            # `ScriptExhausted`): a failed attempt like any other.
            await self.failed(self.unanswered(request, streamed), repr(err))
        else:
            # Cancelled (a time limit, the caller): the request may have been billed, so
            # what the provider reported of it so far (else its prompt) and what it streamed.
            await self.cut_off(self.unanswered(request, streamed))

    async def cut_off(self, usage: Usage) -> None:
        """A cancellation cut the call off: charge the attempt in force `usage` at once (its
        request may have been billed) and count the call with the run (`failed_usage`: a
        node that cut its own call off and went on carries it); its attempt is journaled
        (`keep`) once its visit is known to have failed or stopped, as nothing is written
        while the task is being cancelled: a caller's cancel ends the run with no usage to
        report, and a lease holder's stop must not write into a run another owns."""
        if self.reservation is not None:
            self._cut = self.priced(usage)
            await self.settle(self._cut)
            self.billed += self._cut
            self.spent += self._cut
        if self.billed:
            self.scope.failed_usage[self.key.text] = self.gave_up()
            self.scope.cut_off[self.key.text] = self

    async def keep(self) -> Usage:
        """Journal the attempt a cancellation cut off (charged then) as a failed one, so a
        resume that makes the call again counts it, as it counts those; what the whole call
        used, for the run's usage."""
        cut, self._cut = self._cut, NO_USAGE
        if cut:
            await self._journal(cut, CUT_OFF)
        return self.gave_up()

    def priced(self, usage: Usage) -> Usage:
        """`usage` with the cost the budget charges for it, when the model reported none: the
        run's usage and the ledger then say the same (without caps there is no ledger)."""
        price = getattr(self.scope.deps.budget, "price", None)
        if usage.cost_usd or price is None or not self.scope.deps.budgeted:
            return usage
        cost = float(price(usage))
        return replace(usage, cost_usd=cost) if cost else usage

    async def retried(self, usage: Usage, error: str) -> None:
        """The model retries an attempt itself: charge and journal the failed one, then hold
        the same worst case for the next (BudgetExceeded when the caps have no room left)."""
        await self.failed(usage, error)
        self.reservation = await self.scope.reserve("model", self._amount, self.effect)

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


@runtime_checkable
class ReportingStream(Protocol):
    """A model's stream that tells what the provider has reported so far of the attempt in
    progress (the HTTP adapters' `TurnStream`), so a call cut off mid-stream is charged it:
    the prompt tokens (cache reads included) the provider billed at the start of its answer."""

    reported: Usage


def _reported(stream: Any) -> Usage:
    """What `stream` says the provider reported so far; nothing when it does not say, or
    says something impossible (the estimate stands then)."""
    if not isinstance(stream, ReportingStream):
        return NO_USAGE
    try:
        return Usage.reported(stream.reported)
    except ValueError:
        return NO_USAGE


@dataclass(slots=True)
class Handed:
    """What a node got back from its calls in one attempt of its visit, once one of them did
    not answer: the usage its errors carried (`unanswered`, counted by the engine already),
    and its answers' by call key (`answered`). What the node's patch reports beyond its
    answers (and its child graphs) is its report of the errors' usage, not added again
    (`engine.kept_usage.carry_kept`)."""

    unanswered: Usage = field(default_factory=Usage)
    answered: dict[str, Usage] = field(default_factory=dict)

    async def read_earlier(self, scope: RunScope, key: EffectKey) -> None:
        """Add the calls of the visit before `key`'s that answered in this attempt of it (an
        earlier attempt's are kept with the run: `failed_usage`)."""
        earlier = await answered_calls(scope, key.path, key.visit, int(key.slot) - 1)
        for call, used in earlier.items():
            if call not in scope.failed_usage:
                self.answered.setdefault(call, used)


async def answered_calls(scope: RunScope, path: str, visit: int, slots: int) -> dict[str, Usage]:
    """What the model calls of a visit numbered 1 to `slots` that answered used, by call key,
    from their journaled outcomes."""
    runtime, run_id = scope.deps.runtime, scope.run_id
    found: dict[str, Usage] = {}
    for slot in range(1, slots + 1):
        key = EffectKey(run_id, path, visit, str(slot)).text
        effect = await runtime.effect(run_id, key)
        if (
            effect is not None
            and effect.kind == MODEL_EFFECT
            and effect.status == EffectStatus.DONE
            and effect.outcome is not None
        ):
            found[key] = Usage.from_dict(effect.outcome.get("usage") or {}, trusted=True)
    return found

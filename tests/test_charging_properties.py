"""Charging properties (issue 14): random usage, stream cuts, provider retries and crashes.

Hypothesis draws, for a few runs sharing one capped budget, what the "provider" does on each
attempt of each model call — fail before streaming (a retry the model makes itself, billed
the prompt), cut the stream after k deltas (a step retry), or answer with random usage —
and a crash point: the Nth ledger transaction, before or after it is applied (a simulated
process death: a BaseException nothing catches, and a ledger that refuses every later
call). A crashed run is resumed by a fresh Agent on the same journal and ledger. A run may
also fail after its model call answered (`failing`: an `llm` node whose answer does not fit
its `int` field), so its visit's calls reach no state.

Checked through the ledger at every reserve and settle: `spent + reserved <= cap` for every
capped metric; at the end: `spent >= what the provider billed` (the provider's tokenizer is
the documented estimate: a prompt of c characters is c // 4 + 1 tokens), no hold is left,
and each run's usage is at least what the provider billed it; without a crash the runs'
usage has exactly the tokens the ledger charged (the ledger counts each provider attempt as
a model call, the run's usage each call: docs/governance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.governance.ledger import Decide, InMemoryLedger, Totals
from loomgraph.protocols import ModelChunk, ModelError, ModelRequest, Usage
from loomgraph.protocols.usage import estimate_prompt_tokens
from loomgraph.runtime.memory import InMemoryRuntime


class Crash(BaseException):
    """The simulated process died."""


@dataclass(frozen=True)
class Step:
    """What the provider does on one attempt: `fail` (before streaming), `cut` after
    `deltas`, or `answer` with `deltas` and `output` tokens."""

    kind: str
    deltas: int = 0
    output: int = 0


steps = st.one_of(
    st.just(Step("fail")),
    st.builds(Step, st.just("cut"), st.integers(1, 40)),
    st.builds(Step, st.just("answer"), st.integers(0, 30), st.integers(0, 300)),
)


@dataclass
class Provider:
    """A model whose every attempt follows the run's plan and records what it billed."""

    plans: dict[str, list[Step]] = field(default_factory=dict)
    billed: dict[str, Usage] = field(default_factory=dict)
    name: str = "provider"

    def bill(self, run_id: str, usage: Usage) -> None:
        self.billed[run_id] = self.billed.get(run_id, Usage()) + usage

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        plan = self.plans.setdefault(request.run_id, [])
        prompt = estimate_prompt_tokens(request.prompt_chars())
        most = request.max_tokens or 4096
        while plan and plan[0].kind == "fail":
            plan.pop(0)
            failed = Usage(input_tokens=prompt)
            self.bill(request.run_id, failed)
            yield ModelChunk(type="attempt", attempt=1, error="HTTP 529", usage=failed)
        step = plan.pop(0) if plan else Step("answer", 1, 1)
        deltas = min(step.deltas, most)
        if step.kind == "cut":
            self.bill(request.run_id, Usage(input_tokens=prompt, output_tokens=deltas))
            for _ in range(deltas):
                yield ModelChunk(type="text", text="t")
            raise ModelError("stream cut", retry_step=True)
        output = min(max(step.output, deltas), most)
        usage = Usage(input_tokens=prompt, output_tokens=output)
        self.bill(request.run_id, usage)
        for _ in range(deltas):
            yield ModelChunk(type="text", text="t")
        yield ModelChunk(type="usage", usage=usage)
        yield ModelChunk(type="finish", finish_reason="end_turn")


class CheckedLedger(InMemoryLedger):
    """Checks the caps after every transaction, and dies at the chosen one."""

    def __init__(self, caps: dict[str, int]) -> None:
        super().__init__()
        self.caps = caps
        self.count = 0
        self.die_at: tuple[int, bool] | None = None  # (transaction, after it applied)
        self.dead = False
        self.problems: list[str] = []

    async def transact(self, scopes: Sequence[str], hold_id: str | None, decide: Decide) -> Any:
        if self.dead:
            raise Crash
        self.count += 1
        if self.die_at == (self.count, False):
            self.dead = True
            raise Crash
        updated = await super().transact(scopes, hold_id, decide)
        self.check(await self.totals("global"))
        if self.die_at == (self.count, True):
            self.dead = True
            raise Crash
        return updated

    async def holds(self, run_id: str | None = None) -> Any:
        if self.dead:
            raise Crash
        return await super().holds(run_id)

    def check(self, totals: Totals) -> None:
        for metric, cap in self.caps.items():
            if totals.committed(metric) > cap:
                self.problems.append(f"{metric}: {totals.spent} + {totals.reserved} > {cap}")


# One `llm` node whose answer (the provider's "t"s) never fits its `int` field: the visit
# fails after its call answered.
FAILING = graph_from_yaml(
    "name: failing\nstate:\n  n: {type: int}\nentry: ask\n"
    "nodes:\n  ask: {kind: llm, prompt: '{{ input }}', output: n}\n"
    "edges:\n  - {from: ask, to: END}\n"
)


def agent(
    provider: Provider, runtime: InMemoryRuntime, budget: StandardBudget, failing: bool = False
) -> Agent:
    architecture = FAILING if failing else "react"
    return Agent(
        "answer", model=provider, runtime=runtime, budget=budget, architecture=architecture
    )


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plans=st.lists(st.lists(steps, max_size=4), min_size=1, max_size=3),
    cap=st.integers(150, 3000),
    crash=st.one_of(st.none(), st.tuples(st.integers(1, 12), st.booleans())),
    failing=st.booleans(),
)
def test_caps_hold_and_every_billed_token_is_charged(
    plans: list[list[Step]], cap: int, crash: tuple[int, bool] | None, failing: bool
) -> None:
    asyncio.run(_check(plans, cap, crash, failing))


async def _check(
    plans: list[list[Step]], cap: int, crash: tuple[int, bool] | None, failing: bool
) -> None:
    caps = {"total_tokens": cap, "output_tokens": cap // 2}
    ledger = CheckedLedger(caps)
    config = BudgetConfig(total_tokens=cap, output_tokens=cap // 2, default_max_tokens=200)
    provider, runtime = Provider(), InMemoryRuntime()
    ledger.die_at = crash
    runs: list[str] = []
    crashed = None
    for plan in plans:
        budget = StandardBudget(config, ledger)
        session = agent(provider, runtime, budget, failing).session("go " * 20)
        provider.plans[session.run_id] = list(plan)
        runs.append(session.run_id)
        try:
            await session.execute(lambda event: _nothing())
        except Crash:
            crashed = session.run_id
            ledger.dead = False  # a new process, with the same ledger and journal
            ledger.die_at = None
            again = agent(provider, runtime, StandardBudget(config, ledger), failing)
            await again.resume(session.run_id)
    assert not ledger.problems, ledger.problems
    totals = await ledger.totals("global")
    billed = sum(provider.billed.values(), Usage())
    assert totals.spent.get("input_tokens", 0) >= billed.prompt_tokens
    assert totals.spent.get("output_tokens", 0) >= billed.output_tokens
    assert await ledger.holds() == []
    reported = Usage()
    for run_id in runs:
        record = await runtime.load_run(run_id)
        assert record is not None and record.result is not None
        usage = Usage.from_dict(record.result["usage"], trusted=True)
        reported += usage
        owed = provider.billed.get(run_id, Usage())
        # A run whose process died right after a ledger commit may lack the attempt that
        # commit settled (the ledger has it, checked above; docs/governance.md, "Crashed
        # attempts"). A run stopped by its cap counts the attempts billed before the refusal.
        died_after_commit = crash is not None and crash[1] and run_id == crashed
        if not died_after_commit:
            assert usage.output_tokens >= owed.output_tokens, (record.status, usage, owed)
            assert usage.prompt_tokens >= owed.prompt_tokens, (record.status, usage, owed)
    if crash is None:  # (a crash's charges hold reservations, not what was billed)
        spent = totals.spent
        assert reported.model_calls <= spent.get("model_calls", 0), (reported, spent)
        assert reported.input_tokens == spent.get("input_tokens", 0), (reported, spent)
        assert reported.output_tokens == spent.get("output_tokens", 0), (reported, spent)


async def _nothing() -> None:
    return None

"""A subprocess for the crash-charging tests: the crash matrix's run, with a capped budget.

    python tests/charging_worker.py run|resume --journal SPEC [--schema S] --ledger FILE
                                    [--point P --n N] [--run-id ID]

It is `crash_worker.py`'s run (the same script, tools and kill points) with a
`StandardBudget` whose ledger lives in the journal's database (the SQLite file, or the
Postgres schema), and a model that writes one durable `model:<key>` line to the side-effect
ledger each time it is really called, so the test counts every execution, model or tool.
It prints `{"run_id": …, "pid": …}` (or `{"resumed": …, "pid": …}`) first, and at the end
`{"result": …, "spent": …, "charges": N}` (N: crashed model and tool attempts charged).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import crash_worker as W
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.protocols import ModelChunk, ModelRequest

CAPS = BudgetConfig(model_calls=1000, tool_calls=1000, output_tokens=10_000_000, node_visits=1000)


class CountingModel(W.KillingModel):
    """The killing model; each real call first writes a durable line to the ledger."""

    def __init__(self, killer: W.Killer, ledger: str) -> None:
        super().__init__(killer)
        self.ledger = ledger

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        with open(self.ledger, "a", encoding="utf-8") as f:
            f.write(f"model:{self.killer.model_key}\t{{}}\n")
            f.flush()
            os.fsync(f.fileno())
        async for chunk in super().stream(request):
            yield chunk


async def main(args: argparse.Namespace) -> int:
    killer = W.Killer(args.point, args.n)
    inner = W.open_journal(args.journal, args.schema)
    budget = StandardBudget(CAPS)
    agent = Agent(
        W.INSTRUCTIONS,
        model=CountingModel(killer, args.ledger),
        tools=W.make_tools(args.ledger, killer, False),
        runtime=W.KillingRuntime(inner, killer),
        budget=budget,
    )
    try:
        if args.mode == "run":
            session = agent.session(W.PROMPT, user_id="crash-test")
            W.say(run_id=session.run_id, pid=os.getpid())
            result = await session.execute(lambda event: asyncio.sleep(0))
        else:
            W.say(resumed=args.run_id, pid=os.getpid())
            result = await agent.resume(args.run_id)
        ledger: Any = agent.deps.budget
        totals = await ledger.totals("global")
        charges = await ledger.charges(result.run_id)
    finally:
        await inner.close()  # type: ignore[attr-defined]
    calls = [c for c in charges if c.amounts.get("model_calls") or c.amounts.get("tool_calls")]
    W.say(result=result.to_dict(), spent=totals.spent, charges=len(calls))
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The worker's arguments."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "resume"])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--point", choices=W.POINTS, default=None)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--run-id", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse(sys.argv[1:]))))

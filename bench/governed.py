"""W5: the durable ReAct turn with production governance on, against the same turn without.

    python bench/governed.py [--turns 50] [--repeat 10]

Both sides run the peer harness's W2 conversation (../shared/peers: a model that reads the
last tool result and calls `add(a=v, b=1)` until `--turns`, then answers `done N`), each run
on a fresh `SqliteRuntime` file (WAL, synchronous=NORMAL), with opening and closing the
journal left out of the time, alternately in one process; medians of µs per turn.

Governed adds what a production agent turns on:
- a budget with per-user caps (`StandardBudget(BudgetConfig(per_user=Caps(...)))`), far above
  what a run uses; its ledger is the SQLite file next to the journal, as `Agent` binds it;
- permission rules where `add` is an `ask` rule, approved by an in-process approval handler;
- a keyed (HMAC-chained) `FileAuditLog`;
- `OTelTelemetry` on an SDK tracer provider with an in-memory span exporter.

Reported: µs per turn of each side and their ratio (issue 19's goal: at most 1.5x), and the
governed turn once more with the ledger at `synchronous="NORMAL"` (`SqliteLedger(path,
synchronous="NORMAL")`, a user's explicit choice: the default fsyncs every ledger commit).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loomgraph import Agent, Graph
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.governance import BudgetConfig, Caps, StandardBudget, StandardPermissions
from loomgraph.governance.sqlite_ledger import SqliteLedger
from loomgraph.observability import FileAuditLog, OTelTelemetry
from loomgraph.protocols import ModelChunk, ModelRequest
from loomgraph.runtime.sqlite import SqliteRuntime
from loomgraph.tools import tool

USER = "alice"
KEY = b"bench-audit-key-0123456789abcdef"


@tool
async def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    return a + b


class CountingModel:
    """Calls `add` on the last tool result until it reaches the target, then answers."""

    name = "bench-counting"

    def __init__(self, target: int) -> None:
        self.target = target

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """One turn, from the last message only (as the peer harness's models)."""
        last = request.messages[-1]
        value = int(last["content"]) if last.get("role") == "tool" else None
        if value is None or value < self.target:
            a = 0 if value is None else value
            call = {"id": f"call_{a}", "tool": "add", "args": {"a": a, "b": 1}}
            yield {"type": "tool_call", "call": call}  # type: ignore[typeddict-item]
            finish = "tool_use"
        else:
            yield {"type": "text", "text": f"done {value}"}
            finish = "end_turn"
        yield {"type": "usage", "usage": {"input_tokens": 10, "output_tokens": 5}}  # type: ignore[typeddict-item]
        yield {"type": "finish", "finish_reason": finish}


def long_react() -> Graph:
    """The built-in ReAct graph with visit limits high enough for a long run."""
    data = load_graph("react").to_data()
    data["limits"] = {"max_visits": 1000, "max_node_visits": 500}
    return graph_from_data(data)


def approve(call: dict[str, Any], decision: Any) -> bool:
    """The approval handler: every `add` asked about is approved."""
    return True


def build(
    folder: str, turns: int, governed: bool, exporter: InMemorySpanExporter, ledger_sync: str = ""
) -> Agent:
    """The agent of one run, on a fresh journal file in `folder` (its ledger in the same file,
    at `ledger_sync` when given, else as the Agent binds it)."""
    path = os.path.join(folder, "journal.db")
    agent = functools.partial(
        Agent,
        "bench",
        model=CountingModel(turns),
        tools=[add],
        runtime=SqliteRuntime(path),
        architecture=long_react(),
    )
    if not governed:
        return agent()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    huge = 10 * turns + 100
    return agent(
        budget=StandardBudget(
            BudgetConfig(per_user=Caps(model_calls=huge, tool_calls=huge, total_tokens=huge * 100)),
            SqliteLedger(path, synchronous=ledger_sync) if ledger_sync else None,  # type: ignore[arg-type]
        ),
        permissions=StandardPermissions(ask=["add"]),
        approval_handler=approve,
        audit_log=FileAuditLog(os.path.join(folder, "audit.jsonl"), KEY),
        telemetry=OTelTelemetry(provider),
    )


async def one_run(
    turns: int, governed: bool, exporter: InMemorySpanExporter, ledger_sync: str = ""
) -> float:
    """µs per turn of one run on a fresh journal (setup and close not timed)."""
    folder = tempfile.mkdtemp(prefix="lg-w5-")
    try:
        agent = build(folder, turns, governed, exporter, ledger_sync)
        await agent.deps.runtime.connect()  # type: ignore[attr-defined]
        start = time.perf_counter()
        result = await agent.run("count", user_id=USER)
        elapsed = time.perf_counter() - start
        await agent.aclose()
        if result.status != "completed" or result.output != f"done {turns}":
            raise AssertionError(f"run ended {result.status}: {result.output!r} {result.reason}")
        if governed and not exporter.get_finished_spans():
            raise AssertionError("no span was exported")
        exporter.clear()
        return elapsed / turns * 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def measure(turns: int, repeat: int) -> tuple[float, float, float]:
    """Medians of µs per turn: plain, governed, governed with a NORMAL ledger (alternately)."""
    exporter = InMemorySpanExporter()
    for governed in (False, True):  # warm-up
        await one_run(turns, governed, exporter)
    plain, governed, normal = [], [], []
    for _ in range(repeat):
        plain.append(await one_run(turns, False, exporter))
        governed.append(await one_run(turns, True, exporter))
        normal.append(await one_run(turns, True, exporter, "NORMAL"))
    return statistics.median(plain), statistics.median(governed), statistics.median(normal)


def main() -> None:
    """Print the W5 table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    plain, governed, normal = asyncio.run(measure(args.turns, args.repeat))
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("| measure | µs per turn |")
    print("|---|---:|")
    print(f"| W2, SQLite journal, no governance | {plain:,.0f} |")
    print(f"| W5, the same with production governance | {governed:,.0f} |")
    print(f"| ratio W5 / W2 | {governed / plain:.2f}x |")
    print(f"| W5 with the ledger at NORMAL | {normal:,.0f} |")
    print(f"| ratio of that to W2 | {normal / plain:.2f}x |")


if __name__ == "__main__":
    main()

"""Helpers for tests/test_governance_properties.py: graph functions, and a worker process.

Imported by the tests (tests/ is on sys.path) for the `function` nodes of the random graphs
(`governance_worker:prep`, `:direct`, `:after`), and run as a script for the two-process cap
test:

    python tests/governance_worker.py --journal sqlite:PATH --runs 10 --calls 10 --cap 15
    python tests/governance_worker.py --journal postgres://... --schema S ...

The worker makes one Agent (the `react` graph, a ScriptedModel whose every run would make
`--calls` model calls, a per-user cap of `--cap` model calls), connects the journal and the
ledger, prints `{"ready": pid}` and waits for one line on stdin (the start gate, so both
processes start together), then starts `--runs` runs of user `alice` at once and prints
`{"results": [...]}` (each run's result as a dict).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from loomgraph.graph.node_context import NodeContext
from loomgraph.protocols import ToolCall

# Paths the `direct` node reads, by visit; the tests' permission oracle knows them.
DIRECT_PATHS = ("/data/a.txt", "/etc/passwd", "/data/../etc/passwd", "/tmp/x")
# Every tool call made by a `direct` node: call id -> (tool, original args, user).
DIRECT_CALLS: dict[str, tuple[str, dict[str, Any], str | None]] = {}


def direct_call_id(run_id: str, visit: int) -> str:
    """The id of the tool call a `direct` node makes at one visit (stable across resumes)."""
    return f"direct/{run_id}/{visit}"


def prep(state: Mapping[str, Any]) -> dict[str, Any]:
    """A function node that reads the input and changes nothing."""
    assert isinstance(state["input"], str)
    return {}


async def direct(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """A function node that calls a tool itself, through the permission layer and budget."""
    ref = direct_call_id(ctx.run_id, ctx.visit)
    args = {"path": DIRECT_PATHS[ctx.visit % len(DIRECT_PATHS)], "ref": ref}
    DIRECT_CALLS[ref] = ("read", dict(args), ctx.user_id)
    await ctx.call_tool(ToolCall(id=ref, tool="read", args=args))
    return {}


def after(state: Mapping[str, Any]) -> dict[str, Any]:
    """A function node at the end of a run: writes the output."""
    messages = state["messages"]
    return {"output": str(messages[-1].get("content", "")) if messages else ""}


# ---------------------------------------------------------------------------- the worker


def say(**fields: Any) -> None:
    """One JSON line on stdout, flushed."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def work(args: argparse.Namespace) -> int:
    from loomgraph import Agent
    from loomgraph.governance import BudgetConfig, Caps, StandardBudget
    from loomgraph.models import ScriptedModel

    def script(request: Any) -> Any:
        if request.call_index + 1 < args.calls:
            return {
                "tool_calls": [{"tool": "note", "args": {"n": request.call_index}}],
                "usage": {"input_tokens": 20, "output_tokens": 10},
            }
        return {"text": "done", "usage": {"input_tokens": 20, "output_tokens": 10}}

    def note(n: int) -> str:
        """Take a note."""
        return f"noted {n}"

    config = BudgetConfig(
        model="claude-sonnet-4-5", per_user=Caps(model_calls=args.cap, cost_usd=args.cost_cap)
    )
    runtime: Any
    if args.journal.startswith("sqlite:"):
        runtime = args.journal  # the Agent puts the budget's ledger in the same file
        budget = StandardBudget(config)
    else:
        from loomgraph.governance import PostgresLedger
        from loomgraph.runtime.postgres import PostgresRuntime

        runtime = PostgresRuntime(args.journal, schema=args.schema)
        budget = StandardBudget(config, PostgresLedger(args.journal, schema=args.schema))
    agent = Agent(
        "Take notes.",
        model=ScriptedModel(script, name="claude-sonnet-4-5"),
        tools=[note],
        runtime=runtime,
        budget=budget,
    )
    try:
        # Connected (tables made) before the gate, so the runs start together.
        await agent.deps.runtime.connect()  # type: ignore[attr-defined]
        await agent.deps.budget.totals("user:alice")
        say(ready=os.getpid(), ledger=type(agent.deps.budget.ledger).__name__)
        await asyncio.to_thread(sys.stdin.readline)
        results = await asyncio.gather(
            *(agent.run(f"notes {os.getpid()}/{i}", user_id="alice") for i in range(args.runs))
        )
        say(results=[r.to_dict() for r in results])
        return 0
    finally:
        await agent.deps.budget.ledger.close()
        await agent.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal", required=True, help="sqlite:PATH or a postgres:// DSN")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10, help="model calls one run would make")
    parser.add_argument("--cap", type=int, default=15, help="model calls per user")
    parser.add_argument("--cost-cap", type=float, default=1.0, help="USD per user")
    return asyncio.run(work(parser.parse_args(argv)))


def run_gated(args: Sequence[str], processes: int, timeout: float) -> list[dict[str, Any]]:
    """`processes` workers given `args`, released together once all are connected and
    waiting at the gate; every run's result, in process order."""
    command = [sys.executable, __file__, *args]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for proc in procs:  # all connected and waiting at the gate
            assert proc.stdout is not None
            assert "ready" in json.loads(proc.stdout.readline())
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results: list[dict[str, Any]] = []
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, out
            results += json.loads(out.strip().splitlines()[-1])["results"]
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""What the durable journal costs: time per ReAct turn and bytes per transition.

    python bench/journal.py [--turns 50] [--repeat 20] [--steps 300] [--postgres DSN]
                            [--fencing-only]

1. **µs per ReAct turn**: one run of `--turns` tool turns (ScriptedModel, a no-op async tool)
   with the in-memory journal and with `SqliteRuntime` (WAL, synchronous=NORMAL), measured
   alternately in one process; medians, and the ratio. Each turn journals 2 transitions and
   2 effects (intent + outcome each). `--postgres DSN` adds a PostgresRuntime column.
2. **Storage**: a `function` node that appends a ~1 KB string to a list field, `--steps`
   times (one transition each, ~1 KB patch). The SQLite file size after a WAL checkpoint,
   next to the same loop without a durable journal (the in-memory journal: nothing on disk;
   the JSON bytes of the patches it holds are shown as the floor), and next to what storing
   the whole state at every step would take (what a per-step checkpointer stores). The
   interpreter adds a full-state snapshot every `snapshot_every` transitions (200 by default).
3. **Fencing**: µs per `append_transition` (a ~100-byte patch) straight on the journal,
   unfenced and fenced (conditional on the writer's lease token, as every run's writes are
   when the journal has leases), in alternating batches; medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from loomgraph import Agent, Graph
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import graph_from_data
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunRecord, Transition, Usage
from loomgraph.runtime.sqlite import SqliteRuntime

CALL = {"tool_calls": [{"tool": "noop", "args": {"x": 1}}], "usage": {"input_tokens": 1}}
KB = "x" * 1000  # with JSON quoting and the list item, a patch of ~1 KB


async def noop(x: int) -> int:
    """Do nothing."""
    return x


def long_react() -> Graph:
    """The built-in ReAct graph with visit limits high enough for a long run."""
    data = load_graph("react").to_data()
    data["limits"] = {"max_visits": 1000, "max_node_visits": 500}
    return graph_from_data(data)


def append_kb(state: dict[str, Any]) -> dict[str, Any]:
    """One step of the storage loop: append ~1 KB to `notes`."""
    return {"notes": KB}


def kb_loop(steps: int) -> Graph:
    """A one-node loop that appends ~1 KB to a list field `steps` times."""
    return graph_from_data(
        {
            "schema_version": 1,
            "name": "kb_loop",
            "version": "1",
            "entry": "step",
            "state": {"notes": {"type": "list[str]", "reducer": "append", "default": []}},
            "nodes": {
                "step": {
                    "kind": "function",
                    "call": f"{__name__}:append_kb",
                    "reads": [],
                    "writes": ["notes"],
                }
            },
            "edges": [
                {"from": "step", "to": "step", "when": f"notes | length < {steps}"},
                {"from": "step", "to": "END"},
            ],
            "limits": {"max_visits": steps + 1, "max_node_visits": steps + 1},
        }
    )


async def per_turn(turns: int, repeat: int, folder: Path, dsn: str | None) -> dict[str, float]:
    """Median µs per ReAct turn for each journal, measured alternately."""
    model = ScriptedModel([*([CALL] * turns), "done"])
    journals: dict[str, Any] = {"in-memory": None, "sqlite": SqliteRuntime(folder / "react.db")}
    if dsn:
        from loomgraph.runtime.postgres import PostgresRuntime

        journals["postgres"] = PostgresRuntime(dsn, schema=f"bench_{os.getpid()}")
    agents = {
        name: Agent("bench", model=model, tools=[noop], architecture=long_react(), runtime=rt)
        for name, rt in journals.items()
    }
    times: dict[str, list[float]] = {name: [] for name in agents}
    for agent in agents.values():  # warm up: open files, pools, caches
        await agent.run("go")
    for _ in range(repeat):
        for name, agent in agents.items():
            start = time.perf_counter()
            result = await agent.run("go")
            times[name].append(time.perf_counter() - start)
            assert result.status == "completed" and result.turns == turns + 1, result.reason
    for rt in journals.values():
        if rt is not None:
            if dsn and rt is journals.get("postgres"):
                await _drop_schema(dsn, f"bench_{os.getpid()}")
            await rt.close()
    return {name: statistics.median(t) / turns * 1e6 for name, t in times.items()}


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def storage(steps: int, folder: Path) -> dict[str, float]:
    """Bytes and time of the loop of `steps` ~1 KB appends, with and without the SQLite journal."""
    graph = kb_loop(steps)
    out: dict[str, float] = {}
    memory_agent = Agent("", model="echo", architecture=graph)
    start = time.perf_counter()
    result = await memory_agent.run("go")
    out["memory_us"] = (time.perf_counter() - start) / steps * 1e6
    assert result.status == "completed", result.reason
    transitions = await memory_agent.deps.runtime.transitions(result.run_id)
    assert len(transitions) == steps
    out["patch_bytes"] = sum(len(json.dumps(t.patch)) for t in transitions)
    # A checkpointer storing the whole state at every step: state i holds i notes.
    out["full_state_bytes"] = sum(len(json.dumps({"notes": [KB] * i})) for i in range(1, steps + 1))

    path = folder / "kb_loop.db"
    runtime = SqliteRuntime(path)
    agent = Agent("", model="echo", architecture=graph, runtime=runtime)
    start = time.perf_counter()
    result = await agent.run("go")
    out["sqlite_us"] = (time.perf_counter() - start) / steps * 1e6
    assert result.status == "completed", result.reason
    snapshots = sum(t.snapshot is not None for t in await runtime.transitions(result.run_id))
    await runtime.checkpoint()  # the WAL into the file, so its size is the data's
    await runtime.close()
    out["sqlite_bytes"] = path.stat().st_size
    out["snapshots"] = snapshots
    return out


async def fencing(batches: int, folder: Path, dsn: str | None) -> dict[str, tuple[float, float]]:
    """Median µs per append_transition, unfenced and fenced, per durable journal."""
    journals: dict[str, Any] = {"sqlite": SqliteRuntime(folder / "fence.db")}
    if dsn:
        from loomgraph.runtime.postgres import PostgresRuntime

        journals["postgres"] = PostgresRuntime(dsn, schema=f"bench_fence_{os.getpid()}")
    out: dict[str, tuple[float, float]] = {}
    per_batch = 200
    for name, rt in journals.items():
        runs = {"plain": f"plain-{name}", "fenced": f"fenced-{name}"}
        for run_id in runs.values():
            await rt.start_run(RunRecord(run_id, "bench", "h", None, None))
        lease = await rt.acquire_lease(runs["fenced"], "bench")
        seqs = {"plain": 0, "fenced": 0}
        times: dict[str, list[float]] = {"plain": [], "fenced": []}
        for _ in range(batches):
            for kind, run_id in runs.items():
                fence = lease if kind == "fenced" else None
                start = time.perf_counter()
                for _ in range(per_batch):
                    seqs[kind] += 1
                    step = Transition(run_id, seqs[kind], "n", 1, {"x": KB[:90]}, "n", Usage(), 0.0)
                    await rt.append_transition(step, fence=fence)
                times[kind].append((time.perf_counter() - start) / per_batch * 1e6)
        out[name] = (statistics.median(times["plain"]), statistics.median(times["fenced"]))
        if name == "postgres" and dsn:
            await _drop_schema(dsn, f"bench_fence_{os.getpid()}")
        await rt.close()
    return out


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--postgres",
        default=None,
        metavar="DSN",
        help="also measure a PostgresRuntime (a scratch schema is dropped)",
    )
    parser.add_argument(
        "--fencing-only", action="store_true", help="measure the cost of fencing alone (3.)"
    )
    args = parser.parse_args()
    if args.fencing_only:
        with tempfile.TemporaryDirectory() as tmp:
            fenced = asyncio.run(fencing(max(args.repeat // 2, 3), Path(tmp), args.postgres))
        print_fencing(fenced)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        turns = asyncio.run(per_turn(args.turns, args.repeat, folder, args.postgres))
        sizes = asyncio.run(storage(args.steps, folder))
        fenced = asyncio.run(fencing(max(args.repeat // 2, 3), folder, args.postgres))
    base = turns["in-memory"]
    print(f"ReAct turn, {args.turns} tool turns per run, median of {args.repeat} runs:")
    for name, us in turns.items():
        print(f"  {name:<10} {us:8.1f} µs/turn   {us / base:5.1f}x in-memory")
    print(f"{args.steps} transitions with a ~1 KB patch each:")
    print(
        f"  SQLite file (after checkpoint)    {sizes['sqlite_bytes'] / 1024:8.0f} KiB "
        f"({sizes['snapshots']:.0f} snapshot(s))"
    )
    print(
        f"  without a durable journal         {0:8.0f} KiB on disk; the patches are "
        f"{sizes['patch_bytes'] / 1024:.0f} KiB of JSON"
    )
    print(f"  whole state at every step         {sizes['full_state_bytes'] / 1024:8.0f} KiB")
    print(
        f"  time per transition: in-memory {sizes['memory_us']:.0f} µs, "
        f"SQLite {sizes['sqlite_us']:.0f} µs"
    )
    print_fencing(fenced)


def print_fencing(fenced: dict[str, tuple[float, float]]) -> None:
    """The fencing measurement, as printed."""
    print("append_transition, unfenced vs fenced by the lease token (median µs):")
    for name, (plain, fence) in fenced.items():
        print(f"  {name:<10} {plain:8.1f} → {fence:8.1f} µs   {fence / plain:5.2f}x")


if __name__ == "__main__":
    main()

"""A child visit that ends without its transition (it stopped, or was cut off) is charged
unless the run does it again: the visit above it decides (`engine.cut_visits`).

Found by probing visit charging (each test failed before):
- a node of a user's own that runs a child graph and catches its stop went on, and every
  stopped child visit gave its hold back as if a resume would do it again: a loop of 20 ran
  under a `node_visits` cap of 3;
- map branches stopped at their next effect by a sibling's failure gave theirs back, and the
  map's `retry` went on without them: 12 visits ran, 6 were charged;
- a child visit of a `subgraph` node cut off by the caller's cancel was charged, then done
  again by the resume: one more visit than the run never cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from loomgraph import Agent, tool
from loomgraph.engine.scope import stop_request
from loomgraph.governance import (
    BudgetConfig,
    Hooks,
    SqliteLedger,
    StandardBudget,
    StandardPermissions,
)
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec
from loomgraph.models import ScriptedModel
from loomgraph.protocols import Event, RunStatus, RunStopped, ToolCall
from loomgraph.protocols.events import NODE_STARTED

WAIT = 30  # seconds any awaited event may take at most
BODIES: list[str] = []
EVENTS: dict[str, asyncio.Event] = {}


def one_node(name: str, call: str) -> Graph:
    return Graph(
        name=name,
        entry="n",
        nodes={"n": NodeSpec(kind="function", call=f"{__name__}:{call}")},
        edges=[EdgeSpec(source="n", target="END")],
    )


def agent(tmp: Path, architecture: Any, cap: int, started: list[str], **options: Any) -> Agent:
    hooks = Hooks()

    @hooks.on_event
    def heard(event: Event) -> None:
        if event.kind == NODE_STARTED:
            started.append(event.payload["node"])

    return Agent(
        "x",
        model=ScriptedModel([]),
        architecture=architecture,
        hooks=hooks,
        budget=StandardBudget(BudgetConfig(node_visits=cap), SqliteLedger(tmp / "ledger.db")),
        runtime=f"sqlite:{tmp / 'journal.db'}",
        **options,
    )


async def spent(a: Agent) -> int:
    totals = await a.deps.budget.totals("global")  # type: ignore[attr-defined]
    return int(totals.spent.get("node_visits", 0))


# ---------------------------------------------------------------- a stop caught


@tool
def pay(to: str) -> str:
    """Pay someone."""
    return f"paid {to}"


async def asks(state: Any, ctx: NodeContext) -> dict[str, Any]:
    BODIES.append("asked")
    await ctx.call_tool(ToolCall(id=f"c{len(BODIES)}", tool="pay", args={"to": "ann"}))
    return {}


async def loops(state: Any, ctx: NodeContext) -> dict[str, Any]:
    """Runs a child graph that asks, again and again, going on when it stops."""
    for i in range(20):
        with contextlib.suppress(RunStopped):
            await ctx.run_subgraph(one_node("asks", "asks"), {}, branch=str(i))
    return {}


async def test_child_visits_whose_stop_a_node_caught_count_against_the_cap(
    tmp_path: Path,
) -> None:
    BODIES.clear()
    started: list[str] = []
    graph = one_node("loop", "loops")
    async with agent(
        tmp_path, graph, 3, started, tools=[pay], permissions=StandardPermissions(ask=["pay"])
    ) as a:
        result = await a.run("go")
        assert result.status == RunStatus.BUDGET_EXHAUSTED, result.reason
        assert len(BODIES) <= 2  # the loop's own visit and two children: the cap
        assert await spent(a) == len(started) == 3


# ---------------------------------------------------------------- siblings stopped


def prep(state: dict[str, Any]) -> dict[str, Any]:
    return {"items": ["a", "b", "c"]}


def done(state: dict[str, Any]) -> dict[str, Any]:
    return {}


async def _sent() -> dict[str, Any]:
    return {"ok": True}


async def branch(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """`a` fails once its siblings are at work; they reach their next effect after it."""
    name = state["input"]
    if name == "a":
        await asyncio.wait_for(EVENTS["b"].wait(), WAIT)
        await asyncio.wait_for(EVENTS["c"].wait(), WAIT)
        raise RuntimeError("branch a fails")
    BODIES.append(name)
    EVENTS[name].set()
    await asyncio.wait_for(_told_to_stop(), WAIT)
    await ctx.effect("send", {"to": name}, _sent)  # stopped here: a sibling failed
    return {}


async def _told_to_stop() -> None:
    """Until the map has the failure: what a branch's next effect asks (`stop_request`)."""
    check = stop_request.get()
    assert check is not None
    while await check() is None:
        await asyncio.sleep(0)  # (a turn of the loop: the failure reaches the map)


def one_step(name: str, function: str) -> str:
    """A child graph of one function node of this module, `function`, reading the input."""
    return f"""
schema_version: 1
name: {name}
version: "1"
entry: step
nodes:
  step: {{kind: function, call: 'test_cut_visits:{function}', reads: [input], writes: []}}
edges:
  - {{from: step, to: END}}
"""


LEAF = one_step("leaf", "branch")

TOP = """
schema_version: 1
name: top
version: "1"
entry: prep
state:
  items: {type: 'list[str]'}
  results: {type: 'list[str]', reducer: append, default: []}
nodes:
  prep: {kind: function, call: 'test_cut_visits:prep', reads: [input], writes: [items]}
  each: {kind: map, graph: leaf.yaml, over: items, output: results, concurrency: 3,
         retry: {attempts: 2}, on_error: after}
  after: {kind: function, call: 'test_cut_visits:done', reads: [input], writes: []}
edges:
  - {from: prep, to: each}
  - {from: each, to: after}
  - {from: after, to: END}
"""


async def test_branches_a_siblings_failure_stopped_are_charged(tmp_path: Path) -> None:
    BODIES.clear()
    (tmp_path / "leaf.yaml").write_text(LEAF)
    (tmp_path / "top.yaml").write_text(TOP)
    started: list[str] = []
    async with agent(tmp_path, str(tmp_path / "top.yaml"), 1000, started) as a:
        # The map's retry runs every branch again: each time `a` fails, the others stop.
        EVENTS.update({k: asyncio.Event() for k in ("b", "c")})
        ended = await a.run("go", user_id="alice")
        assert ended.status == RunStatus.COMPLETED, ended.reason
        assert sorted(BODIES) == ["b", "b", "c", "c"]
        assert len(started) == 3 + 2 * 3  # prep, each, after; three branches twice
        assert await spent(a) == len(started)


# ---------------------------------------------------------------- a cancel


async def waits(state: Any, ctx: NodeContext) -> dict[str, Any]:
    """A child visit that waits, the first time, until the run is cancelled."""
    BODIES.append("waited")
    if len(BODIES) == 1:
        EVENTS["in"].set()
        await asyncio.Event().wait()
    return {}


WAITS = one_step("waits", "waits")

CANCELLED = """
schema_version: 1
name: cancelled
version: "1"
entry: first
nodes:
  first: {kind: function, call: 'test_cut_visits:done', reads: [input], writes: []}
  sub: {kind: subgraph, graph: waits.yaml}
edges:
  - {from: first, to: sub}
  - {from: sub, to: END}
"""


def cancelled_graph(tmp: Path) -> str:
    tmp.mkdir(exist_ok=True)
    (tmp / "waits.yaml").write_text(WAITS)
    (tmp / "top.yaml").write_text(CANCELLED)
    return str(tmp / "top.yaml")


async def test_a_child_visit_cut_by_the_callers_cancel_is_charged_once_by_the_resume(
    tmp_path: Path,
) -> None:
    BODIES.clear()
    EVENTS["in"] = asyncio.Event()
    twin_started: list[str] = []
    twin_graph = cancelled_graph(tmp_path / "twin")
    async with agent(tmp_path / "twin", twin_graph, 1000, twin_started) as twin:
        BODIES.append("the twin's wait is not its first")
        assert (await twin.run("go", user_id="alice")).status == RunStatus.COMPLETED
        wanted = await spent(twin)
    BODIES.clear()
    started: list[str] = []
    async with agent(tmp_path, cancelled_graph(tmp_path), wanted, started) as a:
        running = asyncio.create_task(a.run("go", user_id="alice"))
        await asyncio.wait_for(EVENTS["in"].wait(), WAIT)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        (run,) = await a.deps.runtime.runs()
        assert run.status == RunStatus.CANCELLED
        resumed = await a.resume(run.run_id)
        assert resumed.status == RunStatus.COMPLETED, resumed.reason
        assert await spent(a) == wanted

"""The events derived from the journal (`agent.events`, the server's SSE and `/ui` timeline)
report the tool calls, results and approvals of nodes inside child graphs (`subgraph`,
`map`) as the live stream did, each under the transition of the visit that made it, however
deep and in whichever visit of the nodes above it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph import Agent
from loomgraph.agent.effect_visits import VisitWalk
from loomgraph.agent.run_events import JournalEvent, follow_events
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import Turn, as_turn
from loomgraph.protocols import ModelRequest, RunStatus, Transition, Usage
from loomgraph.protocols.events import Event
from loomgraph.runtime.postgres import PostgresRuntime

pg_schema = pg.pg_schema

# What the journal holds of a visit, so what both streams must agree on.
SHOWN = ("tool_call", "tool_result", "node_completed")

FANOUT = """
name: fanout
entry: split
state:
  cities: {type: 'list[str]'}
  reports: {type: 'list[str]', reducer: append, default: []}
nodes:
  split: {kind: function, call: 'tests.test_run_events_nested:split', reads: [input],
          writes: [cities]}
  each: {kind: map, graph: GRAPH, over: cities, output: reports, concurrency: 3}
edges:
  - {from: split, to: each}
  - {from: each, to: END}
"""


def split(state: Mapping[str, Any]) -> dict[str, Any]:
    """The cities named in the prompt."""
    return {"cities": state["input"].split()}


async def lookup(q: str) -> str:
    """Look something up."""
    return f"info {q}"


async def deploy(env: str) -> str:
    """Deploy."""
    return f"deployed to {env}"


def turn(request: ModelRequest) -> Turn:
    """Every model step of react, reflexion and plan-execute, from what the prompt asks: a
    ReAct attempt looks its task up once, then answers; the first reflexion attempt falls
    short, the second passes; plan-execute plans two steps, then one more, then is done."""
    first, last = str(request.messages[0]["content"]), request.messages[-1]
    if "Score how well" in first:
        score = 0.9 if "second answer" in first or "deployed" in first else 0.2
        return as_turn(json.dumps({"score": score, "feedback": "look further"}))
    if "differently" in first:
        return as_turn("look it up again")
    if "Make a short plan" in first:
        return as_turn(json.dumps({"steps": ["north", "south"], "parallel": True}))
    if "Results so far" in first:
        if "info east" in first:
            return as_turn(json.dumps({"done": True, "answer": "all done"}))
        return as_turn(json.dumps({"steps": ["east"], "parallel": True}))
    if last["role"] == "tool":
        which = "second" if "Lessons from earlier attempts" in first else "first"
        return as_turn(f"{which} answer: {last['content']}")
    task = first.strip().splitlines()[-1].removeprefix("Do this step: ").strip()
    if task.startswith("deploy"):
        call = {"tool": "deploy", "args": {"env": task.split()[-1]}}
    else:
        call = {"tool": "lookup", "args": {"q": task}}
    return as_turn({"tool_calls": [call]}, request.call_index)


def _live(events: Sequence[Event]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.node) for e in events if e.kind in SHOWN]


def _journal(items: Sequence[JournalEvent]) -> list[tuple[str, str | None]]:
    return [(i.event.kind, i.event.node) for i in items if i.event.kind in SHOWN]


def _under(pairs: list[tuple[str, str | None]], prefix: str) -> list[tuple[str, str | None]]:
    return [p for p in pairs if (p[1] or "").startswith(prefix)]


async def _both(agent: Agent, prompt: str) -> tuple[list[Event], list[JournalEvent]]:
    """The live stream of a run, and its events read back from the journal."""
    live = [e async for e in agent.stream(prompt)]
    assert live[-1].payload["status"] == "completed", live[-1].payload
    return live, [item async for item in agent.events(live[0].run_id)]


def _agent(tmp_path: Path, architecture: Any, runtime: Any = None, **kw: Any) -> Agent:
    journal = runtime if runtime is not None else f"sqlite:{tmp_path / 'j.db'}"
    return Agent(
        "x",
        model=ScriptedModel(turn),
        tools=[lookup, deploy],
        runtime=journal,
        architecture=architecture,
        **kw,
    )


async def test_reflexion_reports_each_attempts_tool_calls_once(tmp_path: Path) -> None:
    async with _agent(tmp_path, "reflexion") as agent:
        live, journal = await _both(agent, "find the pass")
    assert _journal(journal) == _live(live)
    tools = [(k, n) for k, n in _journal(journal) if k.startswith("tool")]
    assert tools == [("tool_call", "attempt/tools"), ("tool_result", "attempt/tools")] * 2
    # Each attempt's call under its own visit's transition: the first attempt's, the second's.
    calls = [i for i in journal if i.event.kind == "tool_call"]
    visits = {i.id.seq: i for i in journal if i.event.kind == "node_completed"}
    assert [visits[c.id.seq].event.payload["visit"] for c in calls] == [1, 1]
    assert calls[0].id.seq < calls[1].id.seq
    assert [c.event.payload["call"]["id"] for c in calls] == [
        e.payload["call"]["id"] for e in live if e.kind == "tool_call"
    ]


async def test_plan_execute_reports_every_branch_of_every_round(tmp_path: Path) -> None:
    async with _agent(tmp_path, "plan-execute") as agent:
        live, journal = await _both(agent, "explore")
    seen, wanted = _journal(journal), _live(live)
    assert sorted(seen, key=str) == sorted(wanted, key=str)
    # Branches run at once, so only each branch's own order is fixed: round one's two
    # branches, then round two's one (its branch 0 after the map's second visit began).
    for branch in ("execute_parallel/0/", "execute_parallel/1/"):
        assert _under(seen, branch) == _under(wanted, branch)
    results = [i.event.payload for i in journal if i.event.kind == "tool_result"]
    assert sorted(r["result"]["content"] for r in results) == [
        "info east",
        "info north",
        "info south",
    ]


async def _map_over_react(tmp_path: Path, runtime: Any = None) -> None:
    graph = graph_from_yaml(FANOUT.replace("GRAPH", "react"))
    async with _agent(tmp_path, graph, runtime) as agent:
        live, journal = await _both(agent, "lima oslo pune kyiv")
    seen, wanted = _journal(journal), _live(live)
    assert sorted(seen, key=str) == sorted(wanted, key=str)
    for branch in range(4):
        assert _under(seen, f"each/{branch}/") == _under(wanted, f"each/{branch}/")
        assert ("tool_result", f"each/{branch}/tools") in seen


async def test_a_map_over_react_reports_each_branchs_calls(tmp_path: Path) -> None:
    await _map_over_react(tmp_path)


@pytest.mark.postgres
async def test_a_map_over_react_reports_each_branchs_calls_on_postgres(
    tmp_path: Path, pg_schema: str
) -> None:
    await _map_over_react(tmp_path, PostgresRuntime(pg.postgres_dsn(), schema=pg_schema))


async def test_a_map_over_reflexion_tells_the_attempts_of_each_branch_apart(
    tmp_path: Path,
) -> None:
    """Two levels down: `each/0/attempt/tools`, in the first or the second attempt."""
    graph = graph_from_yaml(FANOUT.replace("GRAPH", "reflexion"))
    async with _agent(tmp_path, graph) as agent:
        live, journal = await _both(agent, "lima oslo")
    seen, wanted = _journal(journal), _live(live)
    assert sorted(seen, key=str) == sorted(wanted, key=str)
    for branch in ("each/0/", "each/1/"):
        assert _under(seen, branch) == _under(wanted, branch)
        results = [
            i.event.payload["result"]["content"]
            for i in journal
            if i.event.kind == "tool_result" and i.event.node == f"{branch}attempt/tools"
        ]
        assert len(results) == 2  # one per attempt, none twice


async def test_an_approval_asked_inside_a_subgraph_is_reported_as_at_the_top(
    tmp_path: Path,
) -> None:
    """The ask, the answer and the call, under the transition of the visit that asked, as
    for a node of the run's own graph; while the run waits, its stop event names the call."""
    ask = StandardPermissions(ask=["deploy"])
    kinds: dict[str, list[tuple[str, Any]]] = {}
    for architecture, tools in (("react", "tools"), ("reflexion", "attempt/tools")):
        (tmp_path / architecture).mkdir()
        async with _agent(tmp_path / architecture, architecture, permissions=ask) as agent:
            stopped = await agent.run("deploy prod")
            assert stopped.status == RunStatus.AWAITING_APPROVAL
            waiting = [i.event async for i in agent.events(stopped.run_id)]
            assert waiting[-1].payload["result"]["pending"]["node"] == tools
            done = await agent.resume(stopped.run_id, approve=True)
            assert done.status == RunStatus.COMPLETED, done.reason
            items = [i async for i in agent.events(done.run_id)]
        visit = [i.event for i in items if i.event.node == tools]
        kinds[architecture] = [
            (e.kind, e.payload.get("verdict"))
            for e in visit
            if e.kind in ("permission_decision", "tool_call", "tool_result")
        ]
        asked = [e for e in visit if e.payload.get("verdict") == "ask"]
        assert [(e.payload["tool"], e.payload["rule"]) for e in asked] == [("deploy", "ask:deploy")]
    assert (
        kinds["reflexion"]
        == kinds["react"]
        == [
            ("permission_decision", "ask"),
            ("permission_decision", "allow"),
            ("tool_call", None),
            ("tool_result", None),
        ]
    )


async def test_an_approval_two_graphs_down_is_reported_under_its_visit(tmp_path: Path) -> None:
    """Branch 1 of a map over reflexion waits for an approval; answered, the branch runs
    again from its entry (its transitions journaled again), and the events put the ask
    under the visit that asked, the other branch's calls under their attempts, once each."""
    graph = graph_from_yaml(FANOUT.replace("GRAPH", "reflexion"))
    ask = StandardPermissions(ask=["deploy"])
    async with _agent(tmp_path, graph, permissions=ask) as agent:
        stopped = await agent.run("lima deploy")
        assert stopped.status == RunStatus.AWAITING_APPROVAL
        done = await agent.resume(stopped.run_id, approve=True)
        assert done.status == RunStatus.COMPLETED, done.reason
        items = [i async for i in agent.events(done.run_id)]
    asked = [
        (i.event.node, i.event.kind, i.event.payload.get("verdict"))
        for i in items
        if i.event.kind in ("permission_decision", "tool_call", "tool_result")
    ]
    deploy_visit = "each/1/attempt/tools"
    assert [a for a in asked if a[0] == deploy_visit] == [
        (deploy_visit, "permission_decision", "ask"),
        (deploy_visit, "permission_decision", "allow"),
        (deploy_visit, "tool_call", None),
        (deploy_visit, "tool_result", None),
    ]
    lima = [a[1] for a in asked if a[0] == "each/0/attempt/tools"]
    assert lima == ["tool_call", "tool_result"] * 2  # two attempts, each once


def _done(item: JournalEvent) -> bool:
    return item.event.kind == "node_completed"


class Reveal:
    """A finished run's journal as a follower would read it while the run went on: one more
    transition at each wake (a `changed`), the run running until the last is there."""

    def __init__(self, journal: Any) -> None:
        self.journal, self.shown, self.reads = journal, 0, 0

    async def load_run(self, run_id: str) -> Any:
        record = await self.journal.load_run(run_id)
        total = len(await self.journal.transitions(run_id))
        return record if self.shown >= total else replace(record, status=RunStatus.RUNNING)

    async def transitions_after(self, run_id: str, seq: int) -> list[Any]:
        self.reads += 1
        every = await self.journal.transitions(run_id)
        return [t for t in every[: self.shown] if t.seq > seq]

    async def transitions(self, run_id: str) -> list[Any]:
        every: list[Any] = await self.journal.transitions(run_id)
        return every[: self.shown]

    async def effects(self, run_id: str) -> list[Any]:
        return list(await self.journal.effects(run_id))

    async def changed(self, run_id: str, timeout: float) -> None:
        self.shown += 1


async def test_a_follower_tells_nested_visits_apart_across_its_reads(tmp_path: Path) -> None:
    """Each read gives one new transition: which attempt a branch's call was made in is
    known from the transitions before it, read earlier."""
    graph = graph_from_yaml(FANOUT.replace("GRAPH", "reflexion"))
    async with _agent(tmp_path, graph) as agent:
        live, full = await _both(agent, "lima oslo")
        journal = Reveal(agent.deps.runtime)
        followed = [
            i
            async for i in follow_events(journal, live[0].run_id, changed=journal.changed)  # type: ignore[arg-type]
        ]
    assert [(i.id, i.event.kind, i.event.node, i.event.payload) for i in followed] == [
        (i.id, i.event.kind, i.event.node, i.event.payload) for i in full
    ]
    assert journal.reads > len([i for i in full if _done(i)])  # one transition a read
    assert len([i for i in full if i.event.kind == "tool_result"]) == 4  # 2 branches x 2


def test_a_child_graph_run_again_from_its_entry_counts_its_visits_again() -> None:
    """Subgraph `P` runs a graph A -> C -> A -> C, where C runs a graph with node x. The
    run stops inside C's second visit and is resumed: P's graph is run again from A, and
    each `P/C/x` is in the visit of C it was made in, before and after the resume."""
    made = [
        ("P/A", 1),
        ("P/C/x", 1),
        ("P/C", 1),
        ("P/A", 2),
        ("P/C/x", 1),  # C's second visit; the run stops in it, then is resumed
        ("P/A", 1),
        ("P/C/x", 1),
        ("P/C", 1),
        ("P/A", 2),
        ("P/C/x", 1),
        ("P/C", 2),
        ("P", 1),
        ("P/A", 1),  # P's second visit runs its graph anew
        ("P/C/x", 1),
    ]
    walk = VisitWalk()
    seen = [
        walk.step(Transition("r", seq, node, visit, {}, "", Usage(), 0.0))
        for seq, (node, visit) in enumerate(made, 1)
    ]
    x = [enclosing for (node, _), enclosing in zip(made, seen, strict=True) if node == "P/C/x"]
    assert x == [(1, 1), (1, 2), (1, 1), (1, 2), (2, 1)]

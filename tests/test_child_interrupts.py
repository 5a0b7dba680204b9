"""An `interrupt` inside a child graph (a `subgraph`, a `map` branch): its answer is journaled
as the visit's `answer` effect, so a re-run of the child (after a crash, or a stop elsewhere)
replays it instead of asking again, and what the child did with it (a tool call, replayed by
its key) agrees with the state. At the top level nothing changes: the transition holds it.

Crash tests run `branch_worker.py` subprocesses SIGKILLed after a named transition, on an
SQLite file, with a ledger outside the journal counting each tool execution by its key.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import branch_worker as B
from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml, load_graph_file
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime


def worker(folder: Path, graph: str, mode: str, *args: str) -> dict[str, Any]:
    """One worker process (`branch_worker.run_worker`), its MODE given after the graph."""
    return B.run_worker(folder, mode, graph, *args)


@pytest.mark.parametrize(
    ("target", "concurrency"), [("sub/ask", 1), ("each/1/ask", 1), ("each/1/ask", 3)]
)
def test_an_answer_given_inside_a_child_survives_a_crash_after_it_was_acted_on(
    tmp_path: Path, target: str, concurrency: int
) -> None:
    graph = B.write_graphs(tmp_path, "ask_act", concurrency)
    run = worker(tmp_path, graph, "run")
    run_id, asked = run["run_id"], []
    while run.get("result", {}).get("status") == "interrupted":
        node = run["result"]["pending"]["node"]
        asked.append(node)
        assert asked.count(node) == 1, f"{node} asked again: {asked}"
        answer = ["--run-id", run_id, "--value", json.dumps(f"v:{node}")]
        if node != target:
            run = worker(tmp_path, graph, "resume", *answer)
            continue
        # Killed once the child's tool call acted on the answer (its transition journaled),
        # before the node that runs the child (subgraph, map branch) finished.
        kill = "transition:" + target.replace("/ask", "/act")
        crashed = worker(tmp_path, graph, "resume", *answer, "--kill", kill)
        assert crashed["crash"] == kill, crashed
        # The run goes on (journaled `running`): another value is refused, not taken.
        other = worker(tmp_path, graph, "resume", "--run-id", run_id, "--value", '"B"')
        assert "not waiting for a value" in other["error"]
        run = worker(tmp_path, graph, "resume", "--run-id", run_id)  # the recovery
    assert run["result"]["status"] == "completed", run
    assert sorted(asked) == ["each/0/ask", "each/1/ask", "each/2/ask", "sub/ask"]
    output = json.loads(run["result"]["output"])
    value = f"v:{target}"
    acted = output["summary"] if target == "sub/ask" else output["results"][1]
    assert f";acted=rec-{value}|" in acted  # the tool's result, replayed by its key
    assert acted.rsplit("|", 1)[1] == value  # and the state's answer is the one acted on
    lines = (tmp_path / "ledger").read_text().splitlines()
    executed = Counter(line.split("\t")[1] for line in lines)
    assert executed[value] == 1  # the tool acted once on it, and on nothing else
    assert set(executed) == {f"v:{n}" for n in asked}


LOOP = """
name: twice
entry: ask
state:
  answer: {type: str, default: ""}
  notes: {type: 'list[str]', reducer: append, default: []}
nodes:
  ask: {kind: interrupt, request: str, message: 'note {{ notes | length }}?', output: answer}
  keep: {kind: function, call: 'test_child_interrupts:keep', reads: [answer], writes: [notes]}
  say: {kind: function, call: 'test_child_interrupts:say', reads: [notes], writes: [output]}
edges:
  - {from: ask, to: keep}
  - {from: keep, to: ask, when: 'visits.ask < 2'}
  - {from: keep, to: say}
  - {from: say, to: END}
"""
PARENT = """
name: outer
entry: sub
nodes:
  sub: {kind: subgraph, graph: twice.yaml}
edges:
  - {from: sub, to: END}
"""


def keep(state: Mapping[str, Any]) -> dict[str, Any]:
    """Note the answer."""
    return {"notes": [state["answer"]]}


def say(state: Mapping[str, Any]) -> dict[str, Any]:
    """The notes, in order."""
    return {"output": ",".join(state["notes"])}


async def test_a_child_interrupt_visited_twice_takes_each_answer_once(tmp_path: Path) -> None:
    (tmp_path / "twice.yaml").write_text(LOOP)
    (tmp_path / "outer.yaml").write_text(PARENT)
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    graph = load_graph_file(tmp_path / "outer.yaml")
    agent = Agent("x", model=ScriptedModel([]), runtime=runtime, architecture=graph)
    first = await agent.run("go")
    assert first.status == "interrupted" and first.pending is not None
    assert first.pending.message == "note 0?"
    second = await agent.resume(first.run_id, value="A")
    assert second.pending is not None and second.pending.message == "note 1?"
    # The child runs again from its entry: its first visit replays "A"; "B" is the second's.
    done = await agent.resume(first.run_id, value="B")
    assert done.status == "completed" and done.output == "A,B"
    answers = [e for e in await runtime.effects(first.run_id) if e.kind == "answer"]
    assert [(e.key.split(":", 1)[1], e.outcome) for e in answers] == [
        ("sub.1/ask:1:answer", {"value": "A"}),
        ("sub.1/ask:2:answer", {"value": "B"}),
    ]
    await runtime.close()


async def test_a_top_level_interrupt_journals_its_answer_in_its_transition_and_effect(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    graph = graph_from_yaml(LOOP)
    agent = Agent("x", model=ScriptedModel([]), runtime=runtime, architecture=graph)
    first = await agent.run("go")
    await agent.resume(first.run_id, value="A")
    done = await agent.resume(first.run_id, value="B")
    assert done.output == "A,B"
    # Each answer is also its visit's `answer` effect, journaled as the resume took it up
    # (tests/test_answer_window.py: a crash before the node ran does not lose it).
    answers = [(e.key.split(":", 1)[1], e.outcome) for e in await runtime.effects(first.run_id)]
    assert answers == [("ask:1:answer", {"value": "A"}), ("ask:2:answer", {"value": "B"})]
    history = await agent.history(first.run_id)
    assert [(c.node, c.patch) for c in history if c.node == "ask"] == [
        ("ask", {"answer": "A"}),
        ("ask", {"answer": "B"}),
    ]
    await runtime.close()

"""Runs pinned to their graph: the journal keeps the graph a run started with (once per hash)
and a resume goes on with it, even after the graph file changed; `graph="current"` moves the
run to the Agent's graph only when the run's position fits it.

On SQLite files and the real Postgres server; the graph is a YAML file the test rewrites
between the run's start and its resume (the run stops awaiting an approval).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import GraphChanged, ResumeError
from loomgraph.agent.pinning import compile_pinned, graph_key
from loomgraph.governance import StandardPermissions
from loomgraph.graph.compiled import compile_graph
from loomgraph.models import ScriptedModel
from loomgraph.runtime import InMemoryRuntime, SqliteRuntime

pg_schema = pg.pg_schema
DURABLE = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

ledger: list[str] = []


def rename_tools(graph: str) -> str:
    """The graph with its `tools` node renamed `act`."""
    for before, after in (("  tools:\n", "  act:\n"), ("to: tools\n", "to: act\n")):
        graph = graph.replace(before, after)
    return graph.replace("from: tools\n", "from: act\n")


TOPIC = "  topic:\n    type: str\n    default: tides\n"

GRAPH = """
schema_version: 1
name: pinned
version: "1"
entry: model
state:
  topic:
    type: str
    default: tides
  count:
    type: int
    default: 0
nodes:
  model:
    kind: model
    reads: [messages]
    writes: [messages, usage]
  tools:
    kind: tools
    reads: [messages]
    writes: [messages]
edges:
  - from: model
    to: tools
    when: "last_message.tool_calls | length > 0"
  - from: model
    to: END
  - from: tools
    to: model
"""


@tool(destructive=True)
def delete(path: str) -> str:
    """Delete a file."""
    ledger.append(f"delete {path}")
    return f"deleted {path}"


def script() -> ScriptedModel:
    return ScriptedModel([{"tool_calls": [{"tool": "delete", "args": {"path": "/x"}}]}, "gone"])


@pytest.fixture(params=DURABLE)
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """A maker of journal objects over one durable journal."""
    if request.param == "sqlite":
        path = tmp_path / "journal.db"
        return lambda: SqliteRuntime(str(path))
    from loomgraph.runtime.postgres import PostgresRuntime

    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresRuntime(pg.postgres_dsn(), schema=schema)


def agent(runtime: Any, graph: Path) -> Agent:
    """An agent on the graph file as it reads now; destructive tools ask."""
    return Agent(
        "x",
        model=script(),
        tools=[delete],
        runtime=runtime,
        architecture=graph,
        permissions=StandardPermissions(),
    )


async def waiting(journal: Callable[[], Any], graph: Path, user_id: str | None = None) -> str:
    """A run of the graph file stopped awaiting approval of its `delete` call (at seq 1)."""
    ledger.clear()
    graph.write_text(GRAPH)
    runtime = journal()
    try:
        first = await agent(runtime, graph).run("clean up", user_id=user_id)
    finally:
        await runtime.close()
    assert first.status == "awaiting_approval" and ledger == []
    return first.run_id


async def graph_rows(runtime: Any) -> list[tuple[str, str]]:
    """The (hash, name) rows of the journal's graphs table."""
    if isinstance(runtime, SqliteRuntime):
        with sqlite3.connect(runtime.path) as raw:
            return sorted(raw.execute("SELECT hash, name FROM graphs").fetchall())
    import asyncpg

    conn = await asyncpg.connect(runtime.dsn)
    try:
        rows = await conn.fetch(f'SELECT hash, name FROM "{runtime.schema}".graphs')
    finally:
        await conn.close()
    return sorted((r[0], r[1]) for r in rows)


async def test_resume_goes_on_with_the_pinned_graph_after_the_file_changed(
    journal: Callable[[], Any], tmp_path: Path
) -> None:
    graph = tmp_path / "strategy.yaml"
    run_id = await waiting(journal, graph)
    # The file changes incompatibly: the tools node is renamed, a field removed.
    graph.write_text(rename_tools(GRAPH).replace(TOPIC, ""))
    runtime = journal()
    try:
        later = agent(runtime, graph)
        before = await runtime.load_run(run_id)
        assert before is not None and before.graph_hash != graph_key(later.compiled)
        done = await later.resume(run_id, approve=True)
        assert done.status == "completed" and done.output == "gone"
        assert ledger == ["delete /x"]
        history = await later.history(run_id)
        assert [c.node for c in history] == ["", "model", "tools", "model"]
        assert history[-1].state["topic"] == "tides"  # the pinned graph's field
        after = await runtime.load_run(run_id)
        assert after is not None and after.graph_hash == before.graph_hash
    finally:
        await runtime.close()


async def test_current_graph_with_a_compatible_change_moves_the_run(
    journal: Callable[[], Any], tmp_path: Path
) -> None:
    graph = tmp_path / "strategy.yaml"
    run_id = await waiting(journal, graph)
    graph.write_text(
        GRAPH.replace('version: "1"', 'version: "2"').replace(
            "state:\n", "state:\n  notes:\n    type: list[str]\n    reducer: append\n"
        )
    )
    runtime = journal()
    try:
        later = agent(runtime, graph)
        done = await later.resume(run_id, graph="current", approve=True)
        assert done.status == "completed" and ledger == ["delete /x"]
        moved = await runtime.load_run(run_id)
        assert moved is not None and moved.graph_hash == graph_key(later.compiled)
        history = await later.history(run_id)
        assert history[-1].state["notes"] is None and history[-1].state["topic"] == "tides"
        # Both graphs are kept; the run is now pinned to the new one.
        rows = await graph_rows(runtime)
        assert len(rows) == 2 and (graph_key(later.compiled), "pinned") in rows
    finally:
        await runtime.close()


@pytest.mark.parametrize(
    ("change", "node", "field"),
    [
        (rename_tools, "tools", None),
        (lambda g: g.replace(TOPIC, ""), None, "topic"),
        (
            lambda g: g.replace("type: int\n    default: 0", "type: list[str]\n    default: []"),
            None,
            "count",
        ),
    ],
    ids=["removed-node", "removed-field", "changed-type"],
)
async def test_current_graph_that_does_not_fit_is_refused_naming_node_or_field(
    journal: Callable[[], Any],
    tmp_path: Path,
    change: Callable[[str], str],
    node: str | None,
    field: str | None,
) -> None:
    graph = tmp_path / "strategy.yaml"
    run_id = await waiting(journal, graph)
    graph.write_text(change(GRAPH))
    runtime = journal()
    try:
        later = agent(runtime, graph)
        before = await runtime.load_run(run_id)
        with pytest.raises(GraphChanged) as caught:
            await later.resume(run_id, graph="current", approve=True)
        err = caught.value
        assert (err.run_id, err.seq, err.node, err.field) == (run_id, 1, node, field)
        assert f"{node or field!r}" in str(err) and "seq 1" in str(err)
        # Nothing ran, nothing was written: the run still waits, on its own graph.
        after = await runtime.load_run(run_id)
        assert ledger == [] and after is not None and before is not None
        assert (after.status, after.graph_hash, after.recoveries) == (
            "awaiting_approval",
            before.graph_hash,
            before.recoveries,
        )
        assert len(await runtime.transitions(run_id)) == 1
        # The pinned graph still resumes it.
        assert (await later.resume(run_id, approve=True)).status == "completed"
    finally:
        await runtime.close()


async def test_the_graphs_table_holds_one_row_for_many_runs_of_one_graph(
    journal: Callable[[], Any], tmp_path: Path
) -> None:
    graph = tmp_path / "strategy.yaml"
    for _ in range(3):
        await waiting(journal, graph)
    runtime = journal()
    try:
        rows = await graph_rows(runtime)
        runs = await runtime.runs()
        assert len(runs) == 3 and len({r.graph_hash for r in runs}) == 1
        assert rows == [(runs[0].graph_hash, "pinned")]
        kept = await runtime.graph(runs[0].graph_hash)
        assert kept is not None and kept.spec["graph"]["nodes"]["tools"]["kind"] == "tools"
        assert graph_key(compile_pinned(kept)) == kept.hash  # compiles back to itself
        assert await runtime.graph("no-such-hash") is None
    finally:
        await runtime.close()


async def test_a_graph_with_children_keeps_them_and_its_hash_covers_them(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(GRAPH.replace("name: pinned", "name: child"))
    parent = tmp_path / "parent.yaml"
    parent.write_text(
        "schema_version: 1\nname: parent\nentry: attempt\nnodes:\n"
        "  attempt:\n    kind: subgraph\n    graph: child.yaml\n"
        "edges:\n  - from: attempt\n    to: END\n"
    )
    runtime = InMemoryRuntime()
    first = Agent("x", model=ScriptedModel(["a"]), runtime=runtime, architecture=parent)
    done = await first.run("go")
    assert done.status == "completed"
    record = await runtime.load_run(done.run_id)
    assert record is not None and record.graph_hash != first.compiled.hash
    kept = await runtime.graph(record.graph_hash)
    assert kept is not None and kept.spec["children"]["child.yaml"]["graph"]["name"] == "child"
    # The child file changes: the parent's own spec does not, its run hash does.
    child.write_text(GRAPH.replace("name: pinned", "name: child").replace('"1"', '"2"'))
    from loomgraph.authoring.loader import load_graph_file

    second = compile_graph(load_graph_file(parent))
    assert second.hash == first.compiled.hash and graph_key(second) != record.graph_hash
    rebuilt = compile_pinned(kept)
    assert graph_key(rebuilt) == record.graph_hash  # the kept child, not today's file


async def test_a_run_whose_graph_is_not_kept_needs_graph_current(tmp_path: Path) -> None:
    runtime = InMemoryRuntime()
    graph = tmp_path / "strategy.yaml"
    graph.write_text(GRAPH)
    failing = ScriptedModel([RuntimeError("down"), "ok"])
    first = Agent("x", model=failing, runtime=runtime, architecture=graph)
    failed = await first.run("go")
    assert failed.status == "failed"
    record = await runtime.load_run(failed.run_id)
    assert record is not None
    runtime._graphs.clear()  # a run journaled before graphs were kept
    graph.write_text(GRAPH.replace('version: "1"', 'version: "2"'))
    later = Agent("x", model=ScriptedModel(["ok"]), runtime=runtime, architecture=graph)
    with pytest.raises(GraphChanged, match="does not keep") as caught:
        await later.resume(failed.run_id)
    assert caught.value.run_id == failed.run_id
    with pytest.raises(ResumeError, match="'pinned' or 'current'"):
        await later.resume(failed.run_id, graph="newest")  # type: ignore[arg-type]
    done = await later.resume(failed.run_id, graph="current")
    assert done.status == "completed" and done.output == "ok"


async def test_a_kept_graph_whose_function_no_longer_imports_is_named(tmp_path: Path) -> None:
    module = tmp_path / "pinned_fns.py"
    module.write_text("def step(state):\n    return {'count': 1}\n")
    graph = tmp_path / "fn.yaml"
    graph.write_text(
        "schema_version: 1\nname: fn\nentry: step\nstate:\n  count:\n    type: int\n"
        "    default: 0\nnodes:\n  step:\n    kind: function\n    call: pinned_fns:step\n"
        "    writes: [count]\n"
        "  wait:\n    kind: interrupt\n    request: int\n    output: count\n"
        "edges:\n  - from: step\n    to: wait\n  - from: wait\n    to: END\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        runtime = InMemoryRuntime()
        first = Agent("x", model=ScriptedModel([]), runtime=runtime, architecture=graph)
        stopped = await first.run("go")
        assert stopped.status == "interrupted"
        sys.modules.pop("pinned_fns", None)  # the module is gone from this process
    finally:
        sys.path.remove(str(tmp_path))
    later = Agent("x", model=ScriptedModel([]), runtime=runtime, architecture="react")
    with pytest.raises(GraphChanged, match="pinned_fns:step") as caught:
        await later.resume(stopped.run_id, value=3)
    assert caught.value.run_id == stopped.run_id


async def test_the_server_shows_a_run_with_the_graph_it_started_with(
    journal: Callable[[], Any], tmp_path: Path
) -> None:
    """Checkpoints, states and the run's picture over HTTP are rebuilt with the kept graph,
    not with the graph the server's agent has now (its `tools` node renamed, a field gone)."""
    import httpx

    from loomgraph.serve import create_app

    graph = tmp_path / "strategy.yaml"
    run_id = await waiting(journal, graph, user_id="alice")
    graph.write_text(rename_tools(GRAPH).replace(TOPIC, ""))
    runtime = journal()
    app = create_app(agent(runtime, graph), auth=lambda request: "alice")
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            answer = await client.get(f"/v1/runs/{run_id}/checkpoints")
            assert answer.status_code == 200, answer.text
            points = answer.json()["checkpoints"]
            assert [p["node"] for p in points][:2] == ["", "model"]
            state = (await client.get(f"/v1/runs/{run_id}/checkpoints/{points[-1]['seq']}")).json()
            assert state["state"]["topic"] == "tides"  # the kept graph's field
            svg = (await client.get(f"/v1/runs/{run_id}/graph.svg")).text
            assert ">tools<" in svg and ">act<" not in svg  # the kept graph's nodes
            page = (await client.get(f"/ui/runs/{run_id}")).text
            assert ">tools<" in page and ">act<" not in page
    finally:
        await runtime.close()

"""What a cancel leaves behind, from an outside probe of the server: a cancelled run that
waited for an approval shows no pending approval (API, cancel answer, run page), and the
journaled reason names who stopped a running run (the caller, or the server's shutdown)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from loomgraph import Agent, tool
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.governance import Hooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import CancelReason
from loomgraph.runtime import SqliteRuntime
from loomgraph.serve.hub import SHUTDOWN_REASON
from test_serve_api import served

BOUND = 30.0  # seconds; reaching it means something hung

STARTED = asyncio.Event()


@tool(trusted=True)
async def hang() -> str:
    """Wait until cancelled."""
    STARTED.set()
    await asyncio.Event().wait()
    return "never"


def hanging_agent(tmp_path: Path) -> Agent:
    script = [{"tool_calls": [{"id": "c1", "tool": "hang", "args": {}}]}, "done"]
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    return Agent("You wait.", model=ScriptedModel(script), tools=[hang], runtime=runtime)


async def test_a_cancelled_waiting_run_shows_no_pending_approval(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        waiting = (await s.post("alice", "/v1/runs", {"input": "pay a"})).json()
        assert waiting["status"] == "awaiting_approval", waiting
        run_id, key = waiting["run_id"], waiting["pending"]["key"]
        cancelled = await s.post("alice", f"/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["pending"] == []
        shown = (await s.get("alice", f"/v1/runs/{run_id}")).json()
        assert shown["status"] == "cancelled" and shown["pending"] == []
        page = await s.client.get(f"/ui/runs/{run_id}", headers=s.auth("alice"))
        assert page.status_code == 200
        assert "Approval needed" not in page.text
        assert "approve-button" not in page.text
        # An answer for it is a conflict (the run waits for nothing), as for any ended run.
        late = await s.post(
            "alice", f"/v1/runs/{run_id}/approvals/call_pay", {"allow": True, "key": key}
        )
        assert late.status_code == 409, late.text


async def test_a_running_run_cancelled_over_http_names_who_cancelled(tmp_path: Path) -> None:
    STARTED.clear()
    async with served(tmp_path, hanging_agent(tmp_path)) as s:
        started = await s.post("alice", "/v1/runs", {"input": "go", "background": True})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        await asyncio.wait_for(STARTED.wait(), BOUND)
        stopped = await s.post("alice", f"/v1/runs/{run_id}/cancel")
        assert stopped.status_code == 200, stopped.text
        body = stopped.json()
        assert body["status"] == "cancelled"
        assert body["reason"] == "cancelled by alice"
        record = await s.agent.deps.runtime.load_run(run_id)
        assert record is not None and record.reason == "cancelled by alice"


async def test_runs_stopped_by_the_servers_shutdown_say_so(tmp_path: Path) -> None:
    STARTED.clear()
    agent = hanging_agent(tmp_path)
    async with served(tmp_path, agent) as s:
        started = await s.post("alice", "/v1/runs", {"input": "go", "background": True})
        run_id = started.json()["run_id"]
        await asyncio.wait_for(STARTED.wait(), BOUND)
    # The app's shutdown (lifespan end) cancelled the run it drove.
    journal = SqliteRuntime(str(tmp_path / "journal.db"))
    try:
        record = await journal.load_run(run_id)
    finally:
        await journal.close()
    assert record is not None
    assert (str(record.status), record.reason) == ("cancelled", SHUTDOWN_REASON)
    assert "caller" not in SHUTDOWN_REASON


async def test_a_run_cancelled_by_its_caller_in_python_keeps_the_callers_reason(
    tmp_path: Path,
) -> None:
    STARTED.clear()
    agent = hanging_agent(tmp_path)
    try:
        task = asyncio.create_task(agent.run("go"))
        await asyncio.wait_for(STARTED.wait(), BOUND)
        task.cancel()
        done: Any = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        [record] = await agent.deps.runtime.runs()
        assert (str(record.status), record.reason) == ("cancelled", "cancelled by the caller")
    finally:
        await agent.aclose()


MAP_GRAPH = """
name: fanout
entry: split
state:
  cities: {type: 'list[str]'}
  reports: {type: 'list[str]', reducer: append, default: []}
nodes:
  split: {kind: function, call: 'test_serve_cancel_findings:split', reads: [input],
          writes: [cities]}
  each: {kind: map, graph: react, over: cities, output: reports, concurrency: 2}
edges:
  - {from: split, to: each}
  - {from: each, to: END}
"""


async def split(state: Any) -> dict[str, Any]:
    return {"cities": state["input"].split()}


class HangsOnSlow(ScriptedModel):
    """Answers at once for every city but `slow`, whose call never ends."""

    def __init__(self) -> None:
        super().__init__(lambda r: f"report on {r.messages[0]['content']}")

    async def stream(self, request: Any) -> Any:
        if request.messages[0]["content"] == "slow":
            await asyncio.Event().wait()
        async for chunk in super().stream(request):
            yield chunk


async def test_a_map_run_cancelled_with_a_reason_journals_it_whichever_branch_ended_last(
    tmp_path: Path,
) -> None:
    fast_done = asyncio.Event()

    async def on_event(event: Any) -> None:
        if event.kind == "node_completed" and event.node.startswith("each/1/"):
            fast_done.set()

    hooks = Hooks()
    hooks.on_event(on_event)
    agent = Agent(
        "x",
        model=HangsOnSlow(),
        architecture=graph_from_yaml(MAP_GRAPH),
        runtime=SqliteRuntime(str(tmp_path / "j.db")),
        hooks=hooks,
    )
    try:
        task = asyncio.create_task(agent.run("slow fast"))  # the last branch finishes
        await asyncio.wait_for(fast_done.wait(), BOUND)
        for _ in range(20):  # a few passes of the loop: the fast branch's task returns
            await asyncio.sleep(0)
        task.cancel(CancelReason("cancelled by alice"))
        await asyncio.gather(task, return_exceptions=True)
        [record] = await agent.deps.runtime.runs()
        assert (str(record.status), record.reason) == ("cancelled", "cancelled by alice")
    finally:
        await agent.aclose()

"""An interrupt's answer is bound to the question it answers: each question (a visit of an
`interrupt` node) has a key (`Pending.key`), and a value naming it answers that question or
nothing — a resent answer never answers the next question, which nobody saw. Through the
Python API, the HTTP server (in process, real app), a child graph, and a journal written
before questions had keys. Real SQLite journal files."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from loomgraph import Agent, tool
from loomgraph.agent.answers import pending_of
from loomgraph.agent.checkpoints import ApprovalNotPending, ResumeError, ValueNotPending
from loomgraph.authoring.loader import graph_from_yaml, load_graph_file
from loomgraph.cli.main import main
from loomgraph.engine.context import VisitContext
from loomgraph.engine.effects import BoundValue, ResumeValue
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus, ToolCall
from loomgraph.runtime import SqliteRuntime
from loomgraph.serve import create_app

# The sizes of the batches `run_batch` ran: outside the journal, as a real side effect is.
BATCHES: list[int] = []


@tool
def run_batch(size: int) -> str:
    """Run a batch of work."""
    BATCHES.append(size)
    return f"ran {size}"


def plan(state: Mapping[str, Any]) -> dict[str, Any]:
    """The first batch is small, the next one big."""
    return {"batch": 3 if not state.get("batch") else 500}


async def act(state: Mapping[str, Any], ctx: Any) -> dict[str, Any]:
    """Run the batch the person agreed to; stop when they said no, or after the big one."""
    if not state.get("ok"):
        return {"output": "stopped by the person", "done": True}
    call = ToolCall(id=f"b{state['batch']}", tool="run_batch", args={"size": state["batch"]})
    result = await ctx.call_tool(call)
    return {"output": result["content"], "done": state["batch"] >= 500}


# Asks a person before each batch: the same node asks "3 items?" and then "500 items?".
GRAPH = """
name: batches
entry: plan
state:
  batch: {type: int, default: 0}
  ok: {type: bool, default: false}
  done: {type: bool, default: false}
nodes:
  plan: {kind: function, call: "test_answer_binding:plan", reads: [batch], writes: [batch]}
  ask:
    kind: interrupt
    request: bool
    message: "Run a batch of {{ batch }} items?"
    output: ok
    reads: [batch]
  act: {kind: function, call: "test_answer_binding:act", reads: [batch, ok], writes: [output, done]}
edges:
  - {from: plan, to: ask}
  - {from: ask, to: act}
  - {from: act, to: END, when: "done"}
  - {from: act, to: plan}
"""

# The same loop with the question asked inside a child graph (`confirm`), run by `sub`.
PARENT = """
name: batches_sub
entry: plan
state:
  batch: {type: int, default: 0}
  ok: {type: bool, default: false}
  done: {type: bool, default: false}
nodes:
  plan: {kind: function, call: "test_answer_binding:plan", reads: [batch], writes: [batch]}
  sub: {kind: subgraph, graph: confirm.yaml, inputs: {batch: batch}, outputs: {ok: ok}}
  act: {kind: function, call: "test_answer_binding:act", reads: [batch, ok], writes: [output, done]}
edges:
  - {from: plan, to: sub}
  - {from: sub, to: act}
  - {from: act, to: END, when: "done"}
  - {from: act, to: plan}
"""
CHILD = """
name: confirm
entry: ask
state:
  batch: {type: int, default: 0}
  ok: {type: bool, default: false}
nodes:
  ask:
    kind: interrupt
    request: bool
    message: "Run a batch of {{ batch }} items?"
    output: ok
    reads: [batch]
edges:
  - {from: ask, to: END}
"""


def batches(journal: Path, child: bool = False) -> Agent:
    """The agent asking before each batch, on the SQLite journal file `journal`."""
    if child:
        (journal.parent / "confirm.yaml").write_text(CHILD)
        (journal.parent / "parent.yaml").write_text(PARENT)
        graph = load_graph_file(str(journal.parent / "parent.yaml"))
    else:
        graph = graph_from_yaml(GRAPH)
    return Agent(
        "batches",
        model=ScriptedModel(["-"]),
        tools=[run_batch],
        runtime=SqliteRuntime(str(journal)),
        architecture=graph,
        name="batches",
    )


async def test_a_bound_value_answers_its_question_or_nothing(tmp_path: Path) -> None:
    BATCHES.clear()
    async with batches(tmp_path / "journal.db") as agent:
        first = await agent.run("work")
        assert first.status == RunStatus.INTERRUPTED and first.pending is not None
        shown = first.pending.key
        assert shown == f"{first.run_id}:ask:1:answer"  # the asking visit names it
        second = await agent.resume(first.run_id, value=BoundValue(True, shown))
        assert second.pending is not None and second.pending.message.endswith("500 items?")
        assert second.pending.key == f"{first.run_id}:ask:2:answer" and BATCHES == [3]
        # The same answer again (a retry): the question it answered is gone; the next one,
        # asked by the same node, is another question, which it does not answer.
        with pytest.raises(ValueNotPending, match="answered already"):
            await agent.resume(first.run_id, value=BoundValue(True, shown))
        record = await agent.deps.runtime.load_run(first.run_id)
        assert record is not None and record.status == RunStatus.INTERRUPTED
        assert pending_of(record) == second.pending and BATCHES == [3]
        done = await agent.resume(first.run_id, value=BoundValue(False, second.pending.key))
        assert done.status == RunStatus.COMPLETED and done.output == "stopped by the person"
        with pytest.raises(ValueNotPending, match="not waiting for a value"):
            await agent.resume(first.run_id, value=BoundValue(False, second.pending.key))
        with pytest.raises(ResumeError, match=r"BoundValue\.key"):
            await agent.resume(first.run_id, value=BoundValue(False, ""))
    assert BATCHES == [3]


async def test_an_approval_for_a_run_asking_a_question_says_to_answer_it(tmp_path: Path) -> None:
    """An approval sent to a run that asks a question: refused, saying a value answers it
    (it said "an approval is used once", as if one had been used); nothing ran."""
    BATCHES.clear()
    async with batches(tmp_path / "journal.db") as agent:
        asking = await agent.run("work")
        with pytest.raises(ApprovalNotPending, match="asks a question, not for an approval"):
            await agent.resume(asking.run_id, approve=True)
        record = await agent.deps.runtime.load_run(asking.run_id)
        assert record is not None and record.status == RunStatus.INTERRUPTED
    assert BATCHES == []


def test_a_value_is_taken_by_the_visit_that_asked_only() -> None:
    """The mechanism: the node visit takes a value only when it carries its own key; a value
    checked against an older journal's question (no key) is matched by node, as before."""
    scope = SimpleNamespace(run_id="r1", resume=ResumeValue("ask", True, "r1:ask:1:answer"))
    later = VisitContext(scope, "ask", 2)  # type: ignore[arg-type]
    assert later.take_resume_value() == (False, None) and scope.resume is not None
    other = VisitContext(scope, "other", 1)  # type: ignore[arg-type]
    assert other.take_resume_value() == (False, None)
    asked = VisitContext(scope, "ask", 1)  # type: ignore[arg-type]
    assert asked.take_resume_value() == (True, True) and scope.resume is None
    scope.resume = ResumeValue("ask", False)  # checked against a question without a key
    assert VisitContext(scope, "ask", 7).take_resume_value() == (True, False)  # type: ignore[arg-type]


async def test_a_question_in_a_child_graph_is_bound_too(tmp_path: Path) -> None:
    BATCHES.clear()
    async with batches(tmp_path / "journal.db", child=True) as agent:
        first = await agent.run("work")
        assert first.pending is not None and first.pending.node == "sub/ask"
        shown = first.pending.key
        assert shown == f"{first.run_id}:sub.1/ask:1:answer"  # the parent's visit in it
        second = await agent.resume(first.run_id, value=BoundValue(True, shown))
        assert second.pending is not None and second.pending.node == "sub/ask"
        assert second.pending.key == f"{first.run_id}:sub.2/ask:1:answer" and BATCHES == [3]
        with pytest.raises(ValueNotPending):
            await agent.resume(first.run_id, value=BoundValue(True, shown))
        done = await agent.resume(first.run_id, value=BoundValue(False, second.pending.key))
        assert done.status == RunStatus.COMPLETED
    assert BATCHES == [3]


# ------------------------------------------------------------------------------ HTTP


class Served:
    """The server's app in process (httpx's ASGI transport), with alice's key."""

    def __init__(self, app: Any, client: httpx.AsyncClient, key: str) -> None:
        self.app, self.client, self.key = app, client, key

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers={"X-API-Key": self.key})

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run once this process stopped driving it."""
        await self.app.state.service.hub.wait(run_id)
        answer = await self.client.get(f"/v1/runs/{run_id}", headers={"X-API-Key": self.key})
        data: dict[str, Any] = answer.json()
        return data


@contextlib.asynccontextmanager
async def served(agent: Agent) -> AsyncIterator[Served]:
    app = create_app(agent)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        key = await app.state.service.store.add_key("alice")
        yield Served(app, client, key)
    await agent.aclose()


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["type"], body["message"]


async def test_http_a_resent_value_answers_no_later_question(tmp_path: Path) -> None:
    BATCHES.clear()
    async with served(batches(tmp_path / "journal.db")) as s:
        started = await s.post("/v1/runs", {"input": "work"})
        run_id = started.json()["run_id"]
        (shown,) = (await s.run(run_id))["pending"]
        assert shown["message"] == "Run a batch of 3 items?" and shown["key"]
        answer = {"value": True, "key": shown["key"]}
        accepted = await s.post(f"/v1/runs/{run_id}/resume", answer)
        assert accepted.status_code == 202, accepted.text
        now = await s.run(run_id)
        (asked,) = now["pending"]
        assert now["status"] == "interrupted" and asked["message"] == "Run a batch of 500 items?"
        assert asked["key"] != shown["key"] and BATCHES == [3]
        # The client retries (a lost response): the same body answers nothing now.
        resent = await s.post(f"/v1/runs/{run_id}/resume", answer)
        status, kind, message = error(resent)
        assert (status, kind) == (409, "value_refused") and shown["key"] in message
        # Without the key a value would answer whatever is asked when it arrives: refused.
        unnamed = error(await s.post(f"/v1/runs/{run_id}/resume", {"value": True}))
        assert unnamed[:2] == (422, "validation") and "'key'" in unnamed[2]
        still = await s.run(run_id)
        assert still["status"] == "interrupted" and still["pending"] == [asked]
        assert BATCHES == [3]  # the big batch nobody was shown did not run
        stop = await s.post(f"/v1/runs/{run_id}/resume", {"value": False, "key": asked["key"]})
        assert stop.status_code == 202, stop.text
        assert (await s.run(run_id))["status"] == "completed" and BATCHES == [3]
        # A finished run asks nothing: a value, named or not, is refused alike (409).
        for late in ({"value": True}, answer):
            refused = error(await s.post(f"/v1/runs/{run_id}/resume", late))
            assert refused[:2] == (409, "value_refused"), refused
            assert "not waiting for a value" in refused[2]
        assert BATCHES == [3]


async def test_a_run_journaled_before_questions_had_keys_still_resumes(tmp_path: Path) -> None:
    """A run an older version left waiting (its `Pending` has no key) is answered by node,
    as that version did: over HTTP without a key too. Its next question has one."""
    BATCHES.clear()
    agent = batches(tmp_path / "journal.db")
    first = await agent.run("work", user_id="alice")
    record = await agent.deps.runtime.load_run(first.run_id)
    assert record is not None and record.result is not None
    old = json.loads(json.dumps(record.result))
    del old["pending"]["key"]  # as the previous version journaled it
    await agent.deps.runtime.finish_run(first.run_id, RunStatus.INTERRUPTED, record.reason, old)
    async with served(agent) as s:
        (shown,) = (await s.run(first.run_id))["pending"]
        assert "key" not in shown
        accepted = await s.post(f"/v1/runs/{first.run_id}/resume", {"value": True})
        assert accepted.status_code == 202, accepted.text
        now = await s.run(first.run_id)
        assert now["pending"][0]["key"] == f"{first.run_id}:ask:2:answer" and BATCHES == [3]


# ------------------------------------------------------------------------------ the shell


def test_cli_a_named_answer_answers_its_question_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    BATCHES.clear()
    (tmp_path / "batches.yaml").write_text(GRAPH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    options = ["--runtime", f"sqlite:{tmp_path / 'journal.db'}"]
    options += ["--tools", "test_answer_binding:run_batch"]

    def cli(*args: str) -> tuple[int, str]:
        code = main([*args, *options])
        return code, capsys.readouterr().err

    code = main(["run", "work", "--graph", "batches.yaml", *options])
    out, err = capsys.readouterr()
    run_id = out.split("run=")[1].split()[0]
    first = f"{run_id}:ask:1:answer"
    assert code == 3 and f"--value JSON --request {first}" in err  # how to answer, bound
    # With the tools the run started with: resumed without them, the answer would be used
    # up on an unknown tool.
    assert "--tools test_answer_binding:run_batch" in err
    code, err = cli("runs", "resume", run_id, "--value", "true", "--request", first)
    assert code == 3 and f"--request {run_id}:ask:2:answer" in err and BATCHES == [3]
    code, err = cli("runs", "resume", run_id, "--value", "true", "--request", first)  # again
    assert code == 2 and "answered already" in err and BATCHES == [3]
    code, err = cli("runs", "resume", run_id, "--request", first)
    assert code == 2 and "give --value" in err
    second = f"{run_id}:ask:2:answer"
    code, err = cli("runs", "resume", run_id, "--value", "false", "--request", second)
    assert code == 0 and BATCHES == [3]

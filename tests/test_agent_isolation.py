"""Agents sharing one journal: a run belongs to the Agent that started it (`Agent(name=...)`,
kept as `RunStart.agent`). Another named agent's server does not show it (404, as another
user's run), and `resume`, `fork`, `retry`, `submit_resume` and a worker refuse it
(`RunOfAnotherAgent`) before anything is journaled or executed.

Agent A is the served agent of `serve_agent` (its `pay` appends to `PAID`); agent B has tools of
the same names whose calls, and its model's turns, go to `B_DID`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import RunOfAnotherAgent
from loomgraph.engine.effects import Approval
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunRecord, RunStart, RunStatus
from loomgraph.runtime import PostgresRuntime, SqliteRuntime
from serve_agent import PAID, make_agent, pay, script, step
from test_serve_api import error, every_run_endpoint, served

pg_schema = pg.pg_schema
TESTS = Path(__file__).parent
CLI = [sys.executable, "-m", "loomgraph.cli.main"]

B_DID: list[str] = []


@tool(name="pay", destructive=True)
def b_pay(to: str, amount: int) -> str:
    """Pay someone, agent B's way."""
    B_DID.append(f"pay {to} {amount}")
    return f"B paid {amount} to {to}"


@tool(name="step", trusted=True)
def b_step(n: int) -> str:
    """One step, agent B's way."""
    B_DID.append(f"step {n}")
    return f"B step {n}"


def b_script(request: Any) -> Any:
    B_DID.append("model turn")
    return script(request)


def agent_b(runtime: Any, name: str = "b") -> Agent:
    """Agent B: A's tool names and instructions, its own implementations and model."""
    return Agent(
        "You pay bills.",
        model=ScriptedModel(b_script),
        tools=[b_pay, b_step],
        runtime=runtime,
        name=name,
    )


def journal_rows(path: str) -> dict[str, list[Any]]:
    """Every row of the journal's tables (leases included: a lease taken is a write)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("runs", "transitions", "effects", "leases")
        }


async def refusals(agent: Agent, run_id: str) -> None:
    """Every way an Agent goes on with a run, each refused with the typed error."""
    attempts: list[Any] = [
        lambda: agent.resume(run_id),
        lambda: agent.resume(run_id, approve=True),
        lambda: agent.resume(run_id, approve=Approval("call_pay", True)),
        lambda: agent.resume(run_id, graph="current"),
        lambda: agent.retry(run_id),
        lambda: agent.fork(run_id, at=0),
        lambda: agent.fork(run_id, at=1, patch={"input": "pay acme"}),
    ]
    for attempt in attempts:
        with pytest.raises(RunOfAnotherAgent) as caught:
            await attempt()
        assert caught.value.owner == "a" and caught.value.run_id == run_id
    with pytest.raises(RunOfAnotherAgent):
        async for _ in agent.resume_stream(run_id, approve=True):
            pass


# ---------------------------------------------------------------------- over HTTP


async def test_agent_bs_server_shows_and_touches_none_of_agent_as_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    async with served(tmp_path, make_agent(path, name="a")) as a:
        waiting = (await a.post("alice", "/v1/runs", {"input": "pay acme"})).json()
        assert waiting["status"] == "awaiting_approval"
        done = (await a.post("alice", "/v1/runs", {"input": "hello"})).json()
        async with served(tmp_path, agent_b(SqliteRuntime(path))) as b:
            B_DID.clear()
            own = (await b.post("alice", "/v1/runs", {"input": "hi from b"})).json()
            assert own["status"] == "completed" and B_DID == ["model turn"]
            B_DID.clear()
            before = journal_rows(path)
            listed = (await b.get("alice", "/v1/runs")).json()
            assert [r["run_id"] for r in listed["runs"]] == [own["run_id"]]
            assert listed["cursor"] is None
            asked = await b.get("alice", "/v1/runs", params={"status": "awaiting_approval"})
            assert asked.json()["runs"] == []
            for run_id in (waiting["run_id"], done["run_id"]):
                for method, url, body in every_run_endpoint(run_id):
                    answer = await b.client.request(method, url, json=body, headers=b.auth("alice"))
                    assert error(answer) == (404, "not_found"), (method, url, answer.text)
                    unknown = url.replace(run_id, "0" * 32)
                    other = await b.client.request(
                        method, unknown, json=body, headers=b.auth("alice")
                    )
                    # The same answer as for a run that does not exist.
                    assert answer.json() == json.loads(other.text.replace("0" * 32, run_id))
            # The viewer: not listed, no page, no approval, no fork.
            await b.client.post("/ui/login", data={"key": b.keys["alice"]})
            rows = (await b.client.get("/ui")).text
            assert own["run_id"] in rows
            assert waiting["run_id"] not in rows and done["run_id"] not in rows
            wid = waiting["run_id"]
            assert (await b.client.get(f"/ui/runs/{wid}")).status_code == 404
            assert (await b.client.get(f"/ui/runs/{wid}/checkpoint?seq=1")).status_code == 404
            hx = {"HX-Request": "true"}
            ui_approve = await b.client.post(
                f"/ui/runs/{wid}/approvals/call_pay", data={"allow": "true"}, headers=hx
            )
            assert "no run" in ui_approve.text and ui_approve.headers["hx-retarget"] == "#notice"
            ui_fork = await b.client.post(f"/ui/runs/{wid}/fork", data={"at": "1"}, headers=hx)
            assert "HX-Redirect" not in ui_fork.headers and "no run" in ui_fork.text
            assert B_DID == [] and PAID == []
            assert journal_rows(path) == before
        # A's own server goes on with its run, with A's tool.
        approved = await a.answer("alice", wid, "call_pay", {"allow": True})
        assert approved.status_code == 202, approved.text
        assert (await a.settled(wid))["status"] == "completed"
        assert PAID == [{"to": "acme", "amount": 5}] and B_DID == []
        mine = (await a.get("alice", "/v1/runs")).json()["runs"]
        assert {r["run_id"] for r in mine} == {wid, done["run_id"]}  # not B's run either


async def test_paging_through_one_agents_runs_skips_the_others_and_misses_none(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.db")
    async with (
        make_agent(path, name="a") as a,
        served(tmp_path, agent_b(SqliteRuntime(path))) as b,
    ):
        mine: list[str] = []
        for i in range(9):  # interleaved: A, A, A, A, B, A, A, ...
            if i % 3 == 2:
                mine.append(
                    (await b.post("alice", "/v1/runs", {"input": f"b{i}"})).json()["run_id"]
                )
            await a.run(f"a{i}", user_id="alice")
            await a.run(f"a{i}'", user_id="alice")
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 1}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await b.get("alice", "/v1/runs", params=params)).json()
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["cursor"]
            if cursor is None:
                break
        assert len(mine) == 3 and seen == mine[::-1]


# ---------------------------------------------------------------------- in Python


async def test_agent_b_refuses_agent_as_runs_and_journals_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    PAID.clear()
    async with make_agent(path, name="a") as a, agent_b(SqliteRuntime(path)) as b:
        waiting = await a.run("pay acme", user_id="alice")
        assert waiting.status == RunStatus.AWAITING_APPROVAL
        finished = await a.run("steps 2", user_id="alice")
        B_DID.clear()
        before = journal_rows(path)
        for run_id in (waiting.run_id, finished.run_id):
            await refusals(b, run_id)
        unnamed = agent_b(SqliteRuntime(path), name="")
        await refusals(unnamed, waiting.run_id)  # an unnamed agent may not either
        await unnamed.aclose()
        assert B_DID == [] and PAID == []
        assert journal_rows(path) == before


async def test_the_same_agent_name_goes_on_and_forks_keep_it(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    PAID.clear()
    async with make_agent(path, name="a") as a:
        waiting = await a.run("pay acme", user_id="alice")
    record = await _record(path, waiting.run_id)
    assert record.initial is not None and record.initial.agent == "a"
    assert record.agent_name == "a"
    # Another process, another Agent object: the same name is the same agent.
    async with make_agent(path, name="a") as again:
        forked = await again.fork(waiting.run_id, at=0)
        assert forked.status == RunStatus.AWAITING_APPROVAL
        done = await again.resume(waiting.run_id, approve=True)
        assert done.status == RunStatus.COMPLETED and PAID == [{"to": "acme", "amount": 5}]
    assert (await _record(path, forked.run_id)).agent_name == "a"


async def test_a_run_of_no_recorded_agent_loads_and_resumes_as_before(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    async with make_agent(path, name="a") as a:
        waiting = await a.run("pay acme", user_id="alice")
    with contextlib.closing(sqlite3.connect(path)) as db:
        (initial,) = db.execute(
            "SELECT initial FROM runs WHERE run_id = ?", (waiting.run_id,)
        ).fetchone()
        data = json.loads(initial)
        assert data.pop("agent") == "a"
        # As a journal written before agents' names were kept: no `agent` in `initial`.
        db.execute(
            "UPDATE runs SET initial = ? WHERE run_id = ?", (json.dumps(data), waiting.run_id)
        )
        db.commit()
    record = await _record(path, waiting.run_id)
    assert record.initial is not None and record.initial.agent == "" and record.agent_name == ""
    assert RunStart.from_dict({"state": {"input": "x"}}).agent == ""
    # Unknown agent: any agent may go on with it, as before names were kept.
    B_DID.clear()
    async with served(tmp_path, agent_b(SqliteRuntime(path))) as b:
        listed = (await b.get("alice", "/v1/runs")).json()["runs"]
        assert [r["run_id"] for r in listed] == [waiting.run_id]
        answer = await b.answer("alice", waiting.run_id, "call_pay", {"allow": True})
        assert answer.status_code == 202, answer.text
        assert (await b.settled(waiting.run_id))["status"] == "completed"
    # B went on with the run (its model's turn)... but the approval was given for A's `pay`,
    # and B's `pay` is another tool (its own description): the approval does not cover it.
    assert "model turn" in B_DID and "pay acme 5" not in B_DID


async def test_the_command_line_goes_on_with_a_named_agents_run(tmp_path: Path) -> None:
    # `runs approve` with --model/--tools builds an Agent for the run: it takes the run's
    # recorded name. An agent file names its own agent, which must be the run's.
    path = str(tmp_path / "journal.db")
    async with make_agent(path, name="a") as a:
        waiting = await a.run("pay acme", user_id="alice")
    assert waiting.pending is not None and waiting.pending.key  # the request answered
    (tmp_path / "cli_helpers.py").write_text(
        "from loomgraph.models import ScriptedModel\n"
        "from serve_agent import script\n"
        "MODEL = ScriptedModel(script)\n"
    )
    (tmp_path / "b.yaml").write_text(
        "schema_version: 1\nname: b\nmodel: cli_helpers:MODEL\ntools: [serve_agent:pay]\n"
    )
    paths = [str(tmp_path), str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))

    journal = ["--runtime", f"sqlite:{path}"]
    request = ["--request", waiting.pending.key]

    def loomgraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "runs", "approve", waiting.run_id, "call_pay", *request, *journal, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )

    before = journal_rows(path)
    other = loomgraph("--agent", str(tmp_path / "b.yaml"))
    assert other.returncode == 2 and "started by agent 'a'" in other.stderr, other.stderr
    assert journal_rows(path) == before
    ok = loomgraph("--model", "cli_helpers:MODEL", "--tools", "serve_agent:pay")
    assert ok.returncode == 0, ok.stderr
    assert (await _record(path, waiting.run_id)).status == RunStatus.COMPLETED


async def _record(path: str, run_id: str) -> RunRecord:
    async with SqliteRuntime(path) as journal:
        record = await journal.load_run(run_id)
    assert record is not None
    return record


# ---------------------------------------------------------------------- on Postgres


@pytest.mark.postgres
async def test_agent_b_refuses_agent_as_runs_on_postgres(tmp_path: Path, pg_schema: str) -> None:
    import asyncpg

    from loomgraph.agent.fleet import JobKind, RunJob, fleet_queue
    from loomgraph.workers.advance import advance

    dsn = pg.postgres_dsn()
    PAID.clear()
    a = Agent(
        "You pay bills.",
        model=ScriptedModel(script),
        tools=[pay, step],
        runtime=PostgresRuntime(dsn, schema=pg_schema),
        name="a",
    )
    b = agent_b(PostgresRuntime(dsn, schema=pg_schema))
    async with a, b:
        waiting = await a.run("pay acme", user_id="alice")
        assert waiting.status == RunStatus.AWAITING_APPROVAL
        B_DID.clear()
        db = await asyncpg.connect(dsn)
        try:

            async def rows() -> dict[str, list[Any]]:
                return {
                    t: [
                        tuple(r)
                        for r in await db.fetch(f'SELECT * FROM "{pg_schema}".{t} ORDER BY 1, 2')
                    ]
                    for t in ("runs", "transitions", "effects", "leases")
                }

            fleet = fleet_queue(b.deps.runtime)
            await fleet.install()  # the fleet's tables, as a worker of B would have them
            before = await rows()
            await refusals(b, waiting.run_id)
            with pytest.raises(RunOfAnotherAgent):
                await b.submit_resume(waiting.run_id, approve=True)
            job = RunJob(waiting.run_id, JobKind.RESUME, user_id="alice", answer={"approve": True})
            with pytest.raises(RunOfAnotherAgent):  # a worker of agent B
                await advance(b, fleet, job)
            assert await rows() == before
            assert B_DID == [] and PAID == []
            # B's server lists and reads none of A's runs (the filter is in the SQL).
            async with served(tmp_path, agent_b(PostgresRuntime(dsn, schema=pg_schema))) as s:
                assert (await s.get("alice", "/v1/runs")).json()["runs"] == []
                url = f"/v1/runs/{waiting.run_id}"
                assert error(await s.get("alice", url)) == (404, "not_found")
            done = await a.resume(waiting.run_id, approve=True)
            assert done.status == RunStatus.COMPLETED and PAID == [{"to": "acme", "amount": 5}]
        finally:
            await db.close()


@pytest.mark.postgres
async def test_a_queued_run_is_started_only_by_a_worker_of_its_agent(pg_schema: str) -> None:
    import asyncpg

    from loomgraph.agent.fleet import RunJob, fleet_queue
    from loomgraph.workers.advance import Advanced, advance

    dsn = pg.postgres_dsn()
    a = Agent(
        "x", model=ScriptedModel(["done"]), runtime=PostgresRuntime(dsn, schema=pg_schema), name="a"
    )
    b = agent_b(PostgresRuntime(dsn, schema=pg_schema))
    async with a, b:
        fleet = fleet_queue(a.deps.runtime)
        await fleet.install()
        run_id = await a.submit("hello", user_id="alice")
        job_id, _ = await fleet.job_of(run_id)
        db = await asyncpg.connect(dsn)
        try:
            payload = await db.fetchval(
                f'SELECT payload FROM "{pg_schema}".pgqueuer WHERE id = $1', job_id
            )
            lease = f'SELECT count(*) FROM "{pg_schema}".leases WHERE run_id = $1'
            job = RunJob.decode(payload)
            assert job.agent == "a"  # the job names the agent that submitted it
            with pytest.raises(RunOfAnotherAgent, match="'a'"):  # a worker of agent B
                await advance(b, fleet, job)
            assert (await a.deps.runtime.load_run(run_id)).status == RunStatus.QUEUED
            assert await db.fetchval(lease, run_id) == 0 and B_DID == []
            assert await advance(a, fleet, job) == Advanced.STARTED
        finally:
            await db.close()
        assert (await a.deps.runtime.load_run(run_id)).status == RunStatus.COMPLETED

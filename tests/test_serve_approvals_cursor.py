"""The approvals listing's cursor tells an approver nothing about runs she may not read.

Found by probing the server as an approver: `GET /v1/approvals?cursor=<another user's run
that never asked an approver>` answered 200 with a page, where an unknown id is 400, while
`GET /v1/runs/<that run>` is 404 to her: the cursor was looked up among every run, so it
told her that the run exists and roughly when it started. A cursor now names a run that
asked an approver (the approval request the listing showed), whether still waiting or
answered since, so paging on after an answer still works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.runtime import InMemoryRuntime
from loomgraph.runtime.postgres import PostgresRuntime
from serve_agent import make_agent, pay, script, step
from test_serve_api import Served, error, served

pg_schema = pg.pg_schema

Serving = Callable[[], AbstractAsyncContextManager[Served]]


def on(runtime: object) -> Agent:
    """The served agent on this journal."""
    return Agent("You pay bills.", model=ScriptedModel(script), tools=[pay, step], runtime=runtime)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def serving(request: pytest.FixtureRequest, tmp_path: Path) -> Serving:
    """A server on each kind of store: the journal's SQLite file, memory, a Postgres schema."""
    if request.param == "postgres":
        dsn, schema = pg.require_postgres(), request.getfixturevalue("pg_schema")

    @asynccontextmanager
    async def serve() -> AsyncIterator[Served]:
        if request.param == "sqlite":
            agent = make_agent(str(tmp_path / "journal.db"))
        elif request.param == "memory":
            agent = on(InMemoryRuntime())
        else:
            agent = on(PostgresRuntime(dsn, schema=schema))
        async with served(tmp_path, agent) as s:
            yield s

    return serve


async def test_a_run_that_never_asked_is_no_cursor(serving: Serving) -> None:
    async with serving() as s:
        daves = (await s.post("dave", "/v1/runs", {"input": "hello"})).json()["run_id"]
        assert (await s.get("dave", f"/v1/runs/{daves}")).json()["status"] == "completed"
        assert error(await s.get("bob", f"/v1/runs/{daves}")) == (404, "not_found")
        asked = await s.get("bob", "/v1/approvals", params={"cursor": daves})
        unknown = await s.get("bob", "/v1/approvals", params={"cursor": "0" * 32})
        assert error(asked) == error(unknown) == (400, "bad_request")
        assert (
            asked.json()["error"]["message"].replace(daves, "0" * 32)
            == (unknown.json()["error"]["message"])
        )


async def test_paging_goes_on_past_a_run_answered_meanwhile(serving: Serving) -> None:
    async with serving() as s:
        ids = [
            (await s.post(user, "/v1/runs", {"input": "pay acme"})).json()["run_id"]
            for user in ("dave", "alice", "dave")
        ]
        first = (await s.get("bob", "/v1/approvals", params={"limit": 1})).json()
        [shown] = first["runs"]
        assert shown["run_id"] == ids[2] and first["cursor"] == ids[2]
        body = {"allow": False, "key": shown["pending"][0]["key"], "reason": "no"}
        answered = await s.post("bob", f"/v1/runs/{ids[2]}/approvals/call_pay", body)
        assert answered.status_code == 202, answered.text
        await s.app.state.service.hub.wait(ids[2])
        rest = await s.get("bob", "/v1/approvals", params={"limit": 1, "cursor": first["cursor"]})
        assert rest.status_code == 200, rest.text
        assert [r["run_id"] for r in rest.json()["runs"]] == [ids[1]]

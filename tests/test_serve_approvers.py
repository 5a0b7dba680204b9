"""An approver answers the calls of every user's runs of the served agent, and lists what
waits for an answer (`GET /v1/approvals`); a user without the role still sees only her own
runs, and another user's run still answers 404 to her everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.serve.sql_store import PostgresStore
from serve_agent import PAID, pay, script, step
from test_serve_api import error, served

pg_schema = pg.pg_schema


async def test_an_approver_answers_another_users_call_and_is_recorded(tmp_path: Path) -> None:
    """dave (no role) starts a payment; bob, an approver, lists it and approves it. Before,
    bob got 404 for dave's run: over HTTP only the run's owner could answer, so a plain
    user's call could never be approved there."""
    async with served(tmp_path) as s:
        run_id = (await s.post("dave", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        listed = await s.get("bob", "/v1/approvals")
        assert listed.status_code == 200, listed.text
        [waiting] = listed.json()["runs"]
        assert waiting["run_id"] == run_id and waiting["user_id"] == "dave"
        [pending] = waiting["pending"]
        assert pending["call"]["tool"] == "pay"
        body = {"allow": True, "key": pending["key"]}
        answered = await s.post("bob", f"/v1/runs/{run_id}/approvals/call_pay", body)
        assert answered.status_code == 202, answered.text
        await s.app.state.service.hub.wait(run_id)
        assert (await s.get("dave", f"/v1/runs/{run_id}")).json()["status"] == "completed"
        assert len(PAID) == 1
        [answer] = [e for e in await s.agent.deps.runtime.effects(run_id) if e.kind == "approval"]
        assert answer.status == EffectStatus.DONE and answer.outcome["by"] == "bob"
        audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        (entry,) = [e["payload"] for e in audit if e["action"] == "approval"]
        assert entry["approver"] == "bob"
        assert (await s.get("bob", "/v1/approvals")).json()["runs"] == []
        # Answering is all the role gives: dave's run is still not bob's to read.
        assert error(await s.get("bob", f"/v1/runs/{run_id}")) == (404, "not_found")


async def test_a_user_without_the_role_neither_lists_nor_answers_others_calls(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as s:
        alices = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        assert error(await s.get("dave", "/v1/approvals")) == (403, "forbidden")
        shown = (await s.get("alice", f"/v1/runs/{alices}")).json()["pending"][0]
        body = {"allow": True, "key": shown["key"]}
        refused = await s.post("dave", f"/v1/runs/{alices}/approvals/call_pay", body)
        assert error(refused) == (404, "not_found")  # as an unknown run, never 403
        assert PAID == []
        unknown = await s.post("bob", "/v1/runs/nope/approvals/call_pay", body)
        assert error(unknown) == (404, "not_found")


async def test_the_approval_list_pages_newest_first(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        ids = [
            (await s.post(user, "/v1/runs", {"input": "pay acme"})).json()["run_id"]
            for user in ("dave", "alice", "dave")
        ]
        first = (await s.get("bob", "/v1/approvals", params={"limit": 2})).json()
        assert [r["run_id"] for r in first["runs"]] == ids[:0:-1] and first["cursor"]
        rest = await s.get("bob", "/v1/approvals", params={"limit": 2, "cursor": first["cursor"]})
        assert [r["run_id"] for r in rest.json()["runs"]] == ids[:1]
        assert rest.json()["cursor"] is None
        assert error(await s.get("bob", "/v1/approvals", params={"limit": 0})) == (
            400,
            "bad_request",
        )


async def test_an_approver_answers_across_users_on_postgres(pg_schema: str) -> None:
    """The same in the Postgres store, where the user filter is in the query."""
    agent = Agent(
        "You pay bills.",
        model=ScriptedModel(script),
        tools=[pay, step],
        runtime=PostgresRuntime(pg.require_postgres(), schema=pg_schema),
    )
    async with served(Path("."), agent) as s:
        assert isinstance(s.app.state.service.store, PostgresStore)
        run_id = (await s.post("dave", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        [waiting] = (await s.get("alice", "/v1/approvals")).json()["runs"]
        body = {"allow": False, "key": waiting["pending"][0]["key"], "reason": "not today"}
        answered = await s.post("alice", f"/v1/runs/{run_id}/approvals/call_pay", body)
        assert answered.status_code == 202, answered.text
        await s.app.state.service.hub.wait(run_id)
        assert PAID == []
        assert (await s.get("alice", "/v1/approvals")).json()["runs"] == []

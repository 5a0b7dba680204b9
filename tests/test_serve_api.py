"""The HTTP API against the app in-process (httpx's ASGI transport): every endpoint, every
error status, API keys and roles, and that another user's run is a 404 that changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import EffectStatus
from loomgraph.runtime import PostgresRuntime
from loomgraph.serve import DevModeRefused, create_app
from loomgraph.serve.sql_store import PostgresStore
from serve_agent import PAID, make_agent, pay, script, step

pg_schema = pg.pg_schema


class Served:
    """An app, its agent and a client, with keys for alice (approver), bob, dave."""

    def __init__(self, agent: Any, app: Any, client: httpx.AsyncClient) -> None:
        self.agent, self.app, self.client = agent, app, client
        self.keys: dict[str, str] = {}

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[user]}"}

    async def post(self, user: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.auth(user), **kw)

    async def get(self, user: str, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(user), **kw)

    async def answer(
        self, user: str, run_id: str, call_id: str, body: dict[str, Any]
    ) -> httpx.Response:
        """Answer an approval as a client should: naming the request the run waits for
        (`pending[].key`, read as the user; none when the user cannot read the run)."""
        shown = await self.get(user, f"/v1/runs/{run_id}")
        pending = shown.json().get("pending") or [] if shown.status_code == 200 else []
        named = {"key": pending[0]["key"]} if pending else {}
        return await self.post(user, f"/v1/runs/{run_id}/approvals/{call_id}", body | named)

    async def settled(self, run_id: str) -> dict[str, Any]:
        """The run once this process stopped driving it."""
        await self.app.state.service.hub.wait(run_id)
        return (await self.get("alice", f"/v1/runs/{run_id}")).json()


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, agent: Agent | None = None, **options: Any
) -> AsyncIterator[Served]:
    PAID.clear()
    agent = agent or make_agent(
        str(tmp_path / "journal.db"),
        audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
    )
    app = create_app(agent, **options)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        s = Served(agent, app, client)
        store = app.state.service.store
        s.keys["alice"] = await store.add_key("alice", approver=True)
        s.keys["bob"] = await store.add_key("bob", approver=True)
        s.keys["dave"] = await store.add_key("dave")
        yield s
    await agent.aclose()


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body["error"]) == {"type", "message"} and body["error"]["message"]
    return response.status_code, body["error"]["type"]


async def test_a_run_over_http_is_the_callers_and_is_listed(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        done = await s.post("alice", "/v1/runs", {"input": "hello", "session_id": "s1"})
        assert done.status_code == 201, done.text
        result = done.json()
        assert result["output"] == "done: hello" and result["status"] == "completed"
        assert result["user_id"] == "alice" and result["session_id"] == "s1"
        run_id = result["run_id"]
        record = (await s.get("alice", f"/v1/runs/{run_id}")).json()
        assert record["status"] == "completed" and record["pending"] == []
        listed = (await s.get("alice", "/v1/runs")).json()
        assert [r["run_id"] for r in listed["runs"]] == [run_id]
        assert (await s.get("bob", "/v1/runs")).json()["runs"] == []
        background = await s.post("bob", "/v1/runs", {"input": "later", "background": True})
        assert background.status_code == 202
        bob_run = background.json()["run_id"]
        assert (await s.settled(bob_run)) == {
            "error": {"type": "not_found", "message": (f"no run {bob_run!r}")}
        }  # alice cannot see bob's run
        await s.app.state.service.hub.wait(bob_run)
        mine = (await s.get("bob", f"/v1/runs/{bob_run}")).json()
        assert mine["status"] == "completed" and mine["user_id"] == "bob"


async def test_listing_pages_newest_first_and_filters_by_status(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        ids = [
            (await s.post("alice", "/v1/runs", {"input": f"r{i}"})).json()["run_id"]
            for i in range(3)
        ]
        waiting = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        first = (await s.get("alice", "/v1/runs", params={"limit": 2})).json()
        assert [r["run_id"] for r in first["runs"]] == [waiting, ids[2]]
        second = (
            await s.get("alice", "/v1/runs", params={"limit": 2, "cursor": first["cursor"]})
        ).json()
        assert [r["run_id"] for r in second["runs"]] == [ids[1], ids[0]]
        assert second["cursor"] is None
        pending = (await s.get("alice", "/v1/runs", params={"status": "awaiting_approval"})).json()
        assert [r["run_id"] for r in pending["runs"]] == [waiting]


async def test_authentication_is_required_and_a_wrong_key_is_401(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        assert error(await s.client.get("/v1/runs")) == (401, "unauthorized")
        bad = {"Authorization": "Bearer lg_not-a-key"}
        assert error(await s.client.get("/v1/runs", headers=bad)) == (401, "unauthorized")
        assert error(await s.client.get("/v1/runs", headers={"X-User-Id": "alice"})) == (
            401,
            "unauthorized",
        )  # the header means nothing outside --dev
        assert (await s.client.get("/healthz")).json()["status"] == "ok"


async def test_a_key_sent_and_refused_is_said_to_be_refused(tmp_path: Path) -> None:
    """Found by following docs/serving.md: a request with an unknown key was told that
    "writes need an API key", as if it had sent none."""
    async with served(tmp_path) as s:
        for headers in ({"Authorization": "Bearer lg_bad"}, {"X-API-Key": "lg_bad"}):
            for answer in (
                await s.client.post("/v1/runs", json={"input": "hi"}, headers=headers),
                await s.client.get("/v1/runs", headers=headers),
            ):
                assert error(answer) == (401, "unauthorized")
                assert "not accepted" in answer.json()["error"]["message"]
        none = await s.client.post("/v1/runs", json={"input": "hi"})
        assert "writes need an API key" in none.json()["error"]["message"]
        assert await s.agent.runs() == []


async def test_bad_input_gets_the_right_status_and_nothing_is_stored(tmp_path: Path) -> None:
    async with served(tmp_path, max_body=2000) as s:
        h = s.auth("alice")
        not_json = await s.client.post("/v1/runs", content=b"{nope", headers=h)
        assert error(not_json) == (400, "bad_request")
        assert error(await s.post("alice", "/v1/runs", [1, 2])) == (400, "bad_request")
        assert error(await s.post("alice", "/v1/runs", {"input": 5})) == (422, "validation")
        assert error(await s.post("alice", "/v1/runs", {})) == (422, "validation")
        assert error(await s.post("alice", "/v1/runs", {"input": "x", "stream": "yes"})) == (
            422,
            "validation",
        )
        big = await s.post("alice", "/v1/runs", {"input": "x" * 5000})
        assert error(big) == (413, "too_large")
        assert error(await s.get("alice", "/v1/runs", params={"limit": 0})) == (400, "bad_request")
        assert error(await s.get("alice", "/v1/runs", params={"status": "bogus"})) == (
            400,
            "bad_request",
        )
        assert error(await s.get("alice", "/v1/runs", params={"cursor": "x"})) == (
            400,
            "bad_request",
        )
        assert error(await s.get("alice", "/v1/nothing")) == (404, "not_found")
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []  # nothing was started


async def test_a_prompt_over_the_agents_limit_is_413(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        limit = s.agent.deps.size_limits.prompt_chars
        s.app.state.service.max_body = limit * 4
        too_long = await s.post("alice", "/v1/runs", {"input": "y" * (limit + 1)})
        assert error(too_long) == (413, "too_large")
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []


async def test_approval_by_the_owner_as_approver_records_who_approved(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        stopped = await s.post("alice", "/v1/runs", {"input": "pay acme"})
        assert stopped.status_code == 201 and stopped.json()["status"] == "awaiting_approval"
        run_id = stopped.json()["run_id"]
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        assert pending["call"]["id"] == "call_pay" and pending["call"]["tool"] == "pay"
        edited = {"to": "acme", "amount": 3}
        ok = await s.answer("alice", run_id, "call_pay", {"allow": True, "args": edited})
        assert ok.status_code == 202, ok.text
        assert (await s.settled(run_id))["status"] == "completed"
        assert [edited] == PAID
        again = await s.answer("alice", run_id, "call_pay", {"allow": True})
        assert error(again)[0] == 409
        answers = [e for e in await s.agent.deps.runtime.effects(run_id) if e.kind == "approval"]
        assert answers[0].status == EffectStatus.DONE and answers[0].outcome["by"] == "alice"
        audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        (entry,) = [e["payload"] for e in audit if e["action"] == "approval"]
        assert entry["approver"] == "alice" and entry["allow"] is True


async def test_approvals_need_the_approver_role(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("dave", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        refused = await s.answer("dave", run_id, "call_pay", {"allow": True})
        assert error(refused) == (403, "forbidden")
        assert PAID == []
        assert (await s.get("dave", f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"
        wrong_call = await s.post("alice", "/v1/runs", {"input": "pay acme"})
        other = wrong_call.json()["run_id"]
        bad = await s.answer("alice", other, "call_nope", {"allow": True})
        assert error(bad) == (409, "approval_refused")
        missing = await s.answer("alice", other, "call_pay", {})
        assert error(missing) == (422, "validation")


async def test_an_answer_names_the_request_it_answers(tmp_path: Path) -> None:
    """Without `key` an answer would land on whatever request of that call id is pending
    when it arrives: a client retrying its POST after the run moved on to a second
    same-id call would approve that one. So `key` is required, and checked."""
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        unnamed = await s.post("alice", f"/v1/runs/{run_id}/approvals/call_pay", {"allow": True})
        assert error(unnamed) == (422, "validation")
        assert "'key'" in unnamed.json()["error"]["message"]
        ui = await s.client.post(
            f"/ui/runs/{run_id}/approvals/call_pay",
            data={"allow": "true"},
            headers={**s.auth("alice"), "HX-Request": "true"},
        )
        assert "key" in ui.text and PAID == []
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == (
            "awaiting_approval"
        )
        named = await s.answer("alice", run_id, "call_pay", {"allow": True})
        assert named.status_code == 202, named.text
        assert (await s.settled(run_id))["status"] == "completed" and len(PAID) == 1


def every_run_endpoint(run_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) of every endpoint that reads or changes one run."""
    base = f"/v1/runs/{run_id}"
    return [
        ("GET", base, None),
        ("GET", f"{base}/events", None),
        ("GET", f"{base}/checkpoints", None),
        ("GET", f"{base}/checkpoints/1", None),
        ("GET", f"{base}/diff?a=0&b=1", None),
        ("GET", f"{base}/graph.svg", None),
        ("POST", f"{base}/approvals/call_pay", {"allow": True}),
        ("POST", f"{base}/resume", {"value": 1}),
        ("POST", f"{base}/fork", {"at": 1}),
        ("POST", f"{base}/cancel", None),
    ]


async def test_another_users_run_is_404_everywhere_and_nothing_changes(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        before = (await s.get("alice", f"/v1/runs/{run_id}")).json()
        transitions = len(await s.agent.deps.runtime.transitions(run_id))
        # dave has no role; bob is an approver, whose role reaches every user's pending
        # calls (tests/test_serve_approvers.py) and nothing else of them.
        for user in ("dave", "bob"):
            for method, path, body in every_run_endpoint(run_id):
                if user == "bob" and "/approvals/" in path:
                    continue
                answer = await s.client.request(method, path, json=body, headers=s.auth(user))
                assert error(answer) == (404, "not_found"), (user, method, path, answer.text)
                unknown = path.replace(run_id, "0" * 32)
                answer = await s.client.request(method, unknown, json=body, headers=s.auth(user))
                assert error(answer) == (404, "not_found")  # as an unknown run
        after = (await s.get("alice", f"/v1/runs/{run_id}")).json()
        assert after == before and PAID == []
        assert len(await s.agent.deps.runtime.transitions(run_id)) == transitions
        assert [r["user_id"] for r in (await s.get("alice", "/v1/runs")).json()["runs"]] == [
            "alice"
        ]  # bob's fork made no run


async def test_checkpoints_state_and_diff(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "steps 2"})).json()["run_id"]
        points = (await s.get("alice", f"/v1/runs/{run_id}/checkpoints")).json()["checkpoints"]
        seqs = [p["seq"] for p in points]
        # Checkpoint 0 is the state the run started from; the others name their node.
        assert seqs[0] == 0 and seqs[-1] >= 4 and all(p["node"] for p in points[1:])
        state = (await s.get("alice", f"/v1/runs/{run_id}/checkpoints/{seqs[-1]}")).json()
        assert "done: steps 2" in json.dumps(state["state"]["messages"])
        first = (await s.get("alice", f"/v1/runs/{run_id}/checkpoints/0")).json()["state"]
        assert first["messages"][-1]["content"] == "steps 2"
        changes = (await s.get("alice", f"/v1/runs/{run_id}/diff?a=0&b={seqs[-1]}")).json()
        assert "messages" in changes["changes"]
        assert changes["changes"]["messages"]["before"] == first["messages"]
        assert error(await s.get("alice", f"/v1/runs/{run_id}/checkpoints/999")) == (
            404,
            "not_found",
        )
        assert error(await s.get("alice", f"/v1/runs/{run_id}/diff?a=0")) == (400, "bad_request")
        assert error(await s.get("alice", f"/v1/runs/{run_id}/events?after=x.y")) == (
            400,
            "bad_request",
        )


async def test_fork_resume_and_cancel(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "steps 2"})).json()["run_id"]
        forked = await s.post("alice", f"/v1/runs/{run_id}/fork", {"at": 2})
        assert forked.status_code == 201, forked.text
        child = (await s.get("alice", f"/v1/runs/{forked.json()['run_id']}")).json()
        assert child["parent_run_id"] == run_id and child["parent_seq"] == 2
        assert child["status"] == "completed"
        nowhere = await s.post("alice", f"/v1/runs/{run_id}/fork", {"at": 999})
        assert error(nowhere) == (404, "not_found")
        assert error(await s.post("alice", f"/v1/runs/{run_id}/fork", {"at": "2"})) == (
            422,
            "validation",
        )
        # An `at` given but out of range is said so (it was "field 'at' ... is required").
        for at in (-1, 2**63):
            out = await s.post("alice", f"/v1/runs/{run_id}/fork", {"at": at})
            assert error(out) == (422, "validation")
            assert f"got {at}" in out.json()["error"]["message"], out.text
        not_waiting = await s.post("alice", f"/v1/runs/{run_id}/resume", {"value": 1})
        assert error(not_waiting) == (409, "value_refused")  # it asks nothing
        assert error(await s.post("alice", f"/v1/runs/{run_id}/cancel")) == (409, "run_finished")
        waiting = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        cancelled = await s.post("alice", f"/v1/runs/{waiting}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert error(await s.post("alice", f"/v1/runs/{waiting}/cancel"))[0] == 409
        late = await s.answer("alice", waiting, "call_pay", {"allow": True})
        assert error(late) == (409, "approval_refused") and PAID == []


async def test_cancel_stops_a_run_driven_here(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SERVE_STEP_DELAY", "0.2")
    async with served(tmp_path) as s:
        started = await s.post("alice", "/v1/runs", {"input": "steps 50", "background": True})
        run_id = started.json()["run_id"]
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == "running"
        cancelled = await s.post("alice", f"/v1/runs/{run_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"


@settings(max_examples=25, deadline=None)
@given(ticks=st.integers(min_value=0, max_value=150))
def test_a_cancel_racing_an_approval_answers_what_the_journal_says(ticks: int) -> None:
    """Approve and cancel at once, the cancel `ticks` loop turns later: a cancel answered
    `cancelled` is what the run ends as; otherwise it is refused (409) and the run goes on."""

    async def race() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with served(Path(tmp)) as s:
                made = await s.post("alice", "/v1/runs", {"input": "pay acme"})
                run_id = made.json()["run_id"]

                async def cancel_later() -> httpx.Response:
                    for _ in range(ticks):
                        await asyncio.sleep(0)
                    return await s.post("alice", f"/v1/runs/{run_id}/cancel")

                approved, cancelled = await asyncio.gather(
                    s.answer("alice", run_id, "call_pay", {"allow": True}),
                    cancel_later(),
                )
                final = await s.settled(run_id)
        if cancelled.status_code == 200:
            assert cancelled.json()["status"] == "cancelled"
            assert final["status"] == "cancelled", (approved.status_code, final)
        else:
            assert error(cancelled)[0] == 409
            assert approved.status_code == 202 and final["status"] == "completed"
            assert len(PAID) == 1

    asyncio.run(race())


async def test_graph_openapi_and_health(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        svg = await s.get("alice", "/v1/graph.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
        run_id = (await s.post("alice", "/v1/runs", {"input": "hi"})).json()["run_id"]
        overlay = await s.get("alice", f"/v1/runs/{run_id}/graph.svg")
        assert "<svg" in overlay.text and overlay.text != svg.text
        spec = (await s.client.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.")
        assert "/v1/runs/{run_id}/approvals/{call_id}" in spec["paths"]
        assert "404" in spec["paths"]["/v1/runs/{run_id}"]["get"]["responses"]


async def test_dev_mode_trusts_x_user_id_only_on_loopback(tmp_path: Path) -> None:
    agent = make_agent(str(tmp_path / "j.db"))
    with pytest.raises(DevModeRefused, match="loopback"):
        create_app(agent, dev=True, host="0.0.0.0")
    await agent.aclose()
    async with served(tmp_path, dev=True, host="127.0.0.1") as s:
        mine = await s.client.post("/v1/runs", json={"input": "hi"}, headers={"X-User-Id": "eve"})
        assert mine.status_code == 201 and mine.json()["user_id"] == "eve"
        listed = await s.client.get("/v1/runs", headers={"X-User-Id": "mallory"})
        assert listed.json()["runs"] == []


async def test_a_custom_auth_callable_decides_the_user(tmp_path: Path) -> None:
    def by_header(request: Any) -> str | None:
        return request.headers.get("x-team-user")

    async with served(tmp_path, auth=by_header) as s:
        made = await s.client.post("/v1/runs", json={"input": "hi"}, headers={"x-team-user": "t1"})
        assert made.json()["user_id"] == "t1"
        assert error(await s.client.get("/v1/runs")) == (401, "unauthorized")


async def test_keys_and_runs_are_read_from_the_postgres_journal(
    tmp_path: Path, pg_schema: str
) -> None:
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    agent = Agent("You pay bills.", model=ScriptedModel(script), tools=[pay, step], runtime=runtime)
    async with served(tmp_path, agent) as s:
        assert isinstance(s.app.state.service.store, PostgresStore)
        assert (
            await s.client.get("/v1/runs", headers={"Authorization": "Bearer lg_x"})
        ).status_code == 401
        mine = [(await s.post("alice", "/v1/runs", {"input": f"hi {n}"})).json() for n in range(3)]
        assert [r["status"] for r in mine] == ["completed"] * 3
        first = (await s.get("alice", "/v1/runs?limit=2")).json()
        rest = (await s.get("alice", f"/v1/runs?limit=2&cursor={first['cursor']}")).json()
        newest_first = [r["run_id"] for r in mine][::-1]
        assert [r["run_id"] for r in first["runs"] + rest["runs"]] == newest_first
        assert (await s.get("bob", "/v1/runs")).json()["runs"] == []
        assert error(await s.get("bob", f"/v1/runs/{mine[0]['run_id']}")) == (404, "not_found")
        waiting = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()
        assert waiting["status"] == "awaiting_approval"
        refused = await s.answer("dave", waiting["run_id"], "call_pay", {"allow": True})
        assert error(refused) == (404, "not_found")  # not dave's run: not even a 403
    # Only the keys' hashes are in the journal's schema.
    import asyncpg

    db = await asyncpg.connect(pg.postgres_dsn())
    try:
        rows = await db.fetch(f"SELECT key_hash, user_id, approver FROM {pg_schema}.serve_api_keys")
    finally:
        await db.close()
    assert {(r["user_id"], r["approver"]) for r in rows} == {("alice", 1), ("bob", 1), ("dave", 0)}
    assert not {r["key_hash"] for r in rows} & set(s.keys.values())


async def revoking(s: Served) -> None:
    store = s.app.state.service.store
    listed = {k.user_id: k for k in await store.keys()}
    assert set(listed) == {"alice", "bob", "dave"} and listed["alice"].approver
    assert all(len(k.key_id) == 12 and k.key_id not in s.keys.values() for k in listed.values())
    assert (await s.get("bob", "/v1/runs")).status_code == 200
    assert await store.revoke("000000000000") is None  # no such key: nothing deleted
    gone = await store.revoke(listed["bob"].key_id)
    assert gone is not None and gone.user_id == "bob"
    assert error(await s.get("bob", "/v1/runs")) == (401, "unauthorized")
    assert (await s.get("alice", "/v1/runs")).status_code == 200
    assert {k.user_id for k in await store.keys()} == {"alice", "dave"}


@pytest.mark.parametrize("journal", ["memory", "sqlite"])
async def test_a_revoked_key_is_refused_at_once(tmp_path: Path, journal: str) -> None:
    runtime = f"sqlite:{tmp_path / 'journal.db'}" if journal == "sqlite" else None
    agent = Agent("x", model=ScriptedModel(script), tools=[pay, step], runtime=runtime)
    async with served(tmp_path, agent) as s:
        await revoking(s)


@pytest.mark.postgres
async def test_a_revoked_key_is_refused_at_once_on_postgres(tmp_path: Path, pg_schema: str) -> None:
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    agent = Agent("x", model=ScriptedModel(script), tools=[pay, step], runtime=runtime)
    async with served(tmp_path, agent) as s:
        await revoking(s)

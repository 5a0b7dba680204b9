"""Probing tenant isolation as the operator of a multi-user service would: one user's runs,
slots, listings or approvals reaching another user's. Each test here shows a defect found by
the probe (docs/serving.md, docs/scaling.md, docs/memory.md, docs/governance.md)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import pytest

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.runtime import PostgresRuntime
from loomgraph.workers.slots import UserSlots
from serve_agent import make_agent, pay, script, step
from serve_in_process import served

pg_dsn = pg.pg_dsn
pg_schema = pg.pg_schema


async def _colliding_users(dsn: str, schema: str) -> tuple[str, str]:
    """Two distinct user ids whose per-user slot keys are the same 32-bit `hashtext` (a
    birthday search over 300 000 ids: a handful of pairs are expected)."""
    con = await asyncpg.connect(dsn)
    try:
        pair = await con.fetchval(
            "SELECT array_agg('user-' || n ORDER BY n) FROM generate_series(1, 300000) n "
            "GROUP BY hashtext($1 || ':user-' || n) HAVING count(*) > 1 LIMIT 1",
            schema,
        )
    finally:
        await con.close()
    assert pair is not None, "no colliding pair among 300 000 ids (expected ~10)"
    return pair[0], pair[1]


async def test_per_user_slots_of_two_users_are_kept_apart_whatever_their_ids_hash_to(
    pg_dsn: str,
) -> None:
    """A fleet run with `--per-user 1`: user A has a run advancing (holding A's one slot),
    and user B, another user, submits one. B's id is one whose `schema:user` hashes (Postgres
    `hashtext`, 32 bits) to A's: found in a second among 300 000 ids, and inevitable among a
    large service's users (or chosen by a user picking their own name). B's run found no
    free slot: it waits, put back again and again, until A's run ends, as if it were A's.
    docs/scaling.md promises at most K runs *of one user*; B's run should take B's own slot."""
    dsn = pg_dsn
    schema = pg.unique_name("slots")  # the slots' locks need no tables: only the name
    alice, bob = await _colliding_users(dsn, schema)
    slots = UserSlots(dsn, schema, 1, connections=4, expire_seconds=30.0)
    try:
        held = await slots.take(alice)
        assert held is not None and held.connection is not None
        other = await slots.take(bob)
        for slot in (other, held):
            if slot is not None:
                await slots.release(slot)
    finally:
        await slots.close()
    assert other is not None, (
        f"user {bob!r} found no free slot while only user {alice!r} had a run advancing: "
        "their slots are one lock (hashtext collision)"
    )


async def test_runs_without_a_user_are_held_to_the_per_user_limit_as_one_user(
    pg_dsn: str,
) -> None:
    """A fleet with `--per-user 1`, and runs submitted without a user (`agent.submit(prompt)`:
    a script, a public endpoint). The first took a slot; the second found one too, and so
    would any number: a run without a user takes a slot that holds nothing, so anonymous
    runs advance unlimited while every named user waits for their K. The budget counts such
    runs as one user, `(anonymous)` (docs/governance.md), memory keeps them as one partition
    (docs/memory.md); docs/scaling.md says nothing of them. They should share one user's K
    slots (or the docs should say they are not limited)."""
    slots = UserSlots(pg_dsn, pg.unique_name("slots"), 1, connections=4, expire_seconds=30.0)
    try:
        first = await slots.take(None)
        second = await slots.take(None)
        for slot in (first, second):
            if slot is not None:
                await slots.release(slot)
    finally:
        await slots.close()
    assert first is not None
    assert second is None, "a second run without a user advanced beside the first at K=1"


async def test_a_users_listing_cursors_do_not_count_other_users_runs(tmp_path: Path) -> None:
    """Bob pages his own runs (`GET /v1/runs?limit=1`, then each page's `cursor`). He
    started b0 and b1, then alice started three runs he cannot see, then he started b2. His
    two cursors are the journal's row numbers of b2 and b1, and their difference less one is
    3: how many runs other users started between his (any window he likes, by starting a
    run before and after). docs/serving.md promises another user's runs are invisible to
    him (filtered in the query, 404 everywhere); the cursor should name his page's last run
    without counting anyone else's (an opaque token, or a number of his runs only)."""
    async with served(make_agent(str(tmp_path / "journal.db"))) as (app, client, alice_key):
        bob_key = await app.state.service.store.add_key("bob")
        alice = {"Authorization": f"Bearer {alice_key}"}
        bob = {"Authorization": f"Bearer {bob_key}"}

        async def start(who: dict[str, str], text: str) -> str:
            answer = await client.post("/v1/runs", json={"input": text}, headers=who)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["run_id"])

        b0, b1 = await start(bob, "b0"), await start(bob, "b1")
        for i in range(3):
            await start(alice, f"a{i}")
        b2 = await start(bob, "b2")
        first = (await client.get("/v1/runs", params={"limit": 1}, headers=bob)).json()
        assert [r["run_id"] for r in first["runs"]] == [b2]
        params = {"limit": 1, "cursor": first["cursor"]}
        second = (await client.get("/v1/runs", params=params, headers=bob)).json()
        assert [r["run_id"] for r in second["runs"]] == [b1]
        params["cursor"] = second["cursor"]
        third = (await client.get("/v1/runs", params=params, headers=bob)).json()
        assert [r["run_id"] for r in third["runs"]] == [b0]
    later, earlier = str(first["cursor"]), str(second["cursor"])
    counted = later.isdigit() and earlier.isdigit() and int(later) - int(earlier) - 1
    assert counted != 3, (
        f"bob's cursors {later!r} and {earlier!r} count the 3 runs alice started between "
        "his b1 and b2"
    )


async def test_runs_without_a_user_share_no_slot_with_any_user_id(pg_dsn: str) -> None:
    """Runs without a user are limited as one user, under a key of their own: a user whose id
    spells what an anonymous run might be keyed by (`null`, `None`, `(anonymous)`, ``) still
    takes a slot of their own while an anonymous run holds the anonymous one, at K=1."""
    slots = UserSlots(pg_dsn, pg.unique_name("slots"), 1, connections=6, expire_seconds=30.0)
    taken = []
    try:
        anonymous = await slots.take(None)
        assert anonymous is not None and anonymous.connection is not None
        taken.append(anonymous)
        for user in ("null", "None", "(anonymous)", ""):
            slot = await slots.take(user)
            assert slot is not None, f"user {user!r} found the anonymous runs' slot taken"
            taken.append(slot)
    finally:
        for slot in taken:
            await slots.release(slot)
        await slots.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def journaled_agent(request: pytest.FixtureRequest, tmp_path: Path) -> Agent:
    """The served agent on an in-memory, SQLite or Postgres journal (each store's paging)."""
    if request.param == "sqlite":
        return make_agent(str(tmp_path / "journal.db"))
    runtime = None
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        runtime = PostgresRuntime(pg.postgres_dsn(), schema=schema)
    return Agent("You pay bills.", model=ScriptedModel(script), tools=[pay, step], runtime=runtime)


async def _start(client: httpx.AsyncClient, key: str, text: str) -> str:
    answer = await client.post("/v1/runs", json={"input": text}, headers=_auth(key))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["run_id"])


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_cursor_naming_another_users_run_is_refused_as_one_naming_no_run(
    journaled_agent: Agent,
) -> None:
    """A cursor is the run id of a page's last run. Bob, who knows (or guesses) one of
    alice's run ids, passes it as his cursor: were it taken, his page would be the runs
    started before alice's, telling him when hers started. It is 400, the same answer as for
    an id no run has, or text no run id can be (a NUL: Postgres would refuse the query)."""
    async with served(journaled_agent) as (app, client, alice_key):
        bob_key = await app.state.service.store.add_key("bob")
        await _start(client, bob_key, "b0")
        hers = await _start(client, alice_key, "a0")
        await _start(client, bob_key, "b1")
        answers = {}
        for cursor in (hers, "no-such-run", "a\x00b"):
            answer = await client.get("/v1/runs", params={"cursor": cursor}, headers=_auth(bob_key))
            assert answer.status_code == 400, answer.text
            answers[cursor] = answer.json()["error"]
        for cursor, found in answers.items():
            message = f"cursor {cursor!r} is not one this server gave: it names no run of yours"
            assert found == {"type": "bad_request", "message": message}
        own = await client.get("/v1/runs", params={"cursor": hers}, headers=_auth(alice_key))
        assert own.status_code == 200 and own.json()["runs"] == []  # hers: nothing before it


async def test_a_cursor_is_good_on_another_server_of_the_deployment_and_after_a_restart(
    pg_schema: str,
) -> None:
    """Two servers share one Postgres journal (a deployment behind a load balancer): a
    client's first page comes from one, its next from the other, and the page after from a
    server started after both stopped. Nothing of a cursor is kept in a server."""

    def agent() -> Agent:
        runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
        return Agent(
            "You pay bills.", model=ScriptedModel(script), tools=[pay, step], runtime=runtime
        )

    async with served(agent()) as (_, first_client, key):
        started = [await _start(first_client, key, f"r{i}") for i in range(5)]
        async with served(agent()) as (_, second_client, _):
            page = (await first_client.get("/v1/runs?limit=2", headers=_auth(key))).json()
            params = {"limit": 2, "cursor": page["cursor"]}
            other = await second_client.get("/v1/runs", params=params, headers=_auth(key))
            assert other.status_code == 200, other.text
            listed = [r["run_id"] for r in page["runs"] + other.json()["runs"]]
            cursor = other.json()["cursor"]
    async with served(agent()) as (_, client, _):
        params = {"limit": 2, "cursor": cursor}
        last = await client.get("/v1/runs", params=params, headers=_auth(key))
        assert last.status_code == 200, last.text
        assert last.json()["cursor"] is None
        listed += [r["run_id"] for r in last.json()["runs"]]
    assert listed == started[::-1]

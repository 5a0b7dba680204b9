"""Long-term memory from a user's side (found by a probe; each test failed before its fix).

Strongest first: taint and trust of what memory recalls, then lost data, then wrong results,
then untyped errors. Postgres tests need the server (LOOMGRAPH_REQUIRE_POSTGRES=1 to fail
instead of skipping).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph.errors import LoomgraphError
from loomgraph.memory import (
    Fact,
    InMemoryMemory,
    MemoryBackendError,
    MemoryInputError,
    SqliteMemory,
)
from loomgraph.protocols import Episode

pg_schema = pg.pg_schema


async def test_forgetting_a_session_keeps_a_fact_a_kept_session_also_stated(
    tmp_path: Path,
) -> None:
    """Session s1 records "user lives in Porto" (confidence 0.5); session s2 states it again
    (0.9: the same object keeps s1's row and raises its confidence). The user forgets s1:
    the fact is deleted, although s2 — kept — said it too, and was told "remembered".
    (Forgetting s2 instead would leave s2's raised confidence behind.)
    Cause: `SqlMemory._add_facts` (memory/sql.py; null.py alike) keeps only the first run's
    and session's stamp on a restated fact, and `_forget` deletes by that stamp."""
    memory = SqliteMemory(tmp_path / "m.db")
    await memory.add_fact(
        "alice", "user", "lives in", "Porto", confidence=0.5, source_run="r1", session_id="s1"
    )
    await memory.add_fact(
        "alice", "user", "lives in", "Porto", confidence=0.9, source_run="r2", session_id="s2"
    )
    await memory.forget("alice", session_id="s1")
    kept = [(f.subject, f.predicate, f.object) for f in await memory.facts("alice")]
    await memory.close()
    assert kept == [("user", "lives in", "Porto")], "a fact the kept session stated was deleted"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_forgetting_the_session_that_restated_a_fact_leaves_what_the_other_said(
    kind: str, tmp_path: Path
) -> None:
    """The other half of the test above, on both backends: forgetting s2 (which restated
    the fact at 0.9) leaves the fact as s1 said it — confidence 0.5, run r1 — and then
    forgetting s1 deletes it. `export` lists every run that stated it (`fact_sources`).
    Before the fix s2's 0.9 stayed behind (the row kept one stamp, s1's)."""
    memory = InMemoryMemory() if kind == "memory" else SqliteMemory(tmp_path / "m.db")
    for conf, run, session in ((0.5, "r1", "s1"), (0.9, "r2", "s2")):
        await memory.add_fact(
            "alice",
            "user",
            "lives in",
            "Porto",
            confidence=conf,
            source_run=run,
            session_id=session,
        )
    sources = [
        (s["session_id"], s["confidence"]) for s in (await memory.export("alice"))["fact_sources"]
    ]
    assert sources == [("s1", 0.5), ("s2", 0.9)]
    assert await memory.forget("alice", session_id="s2") == 0  # no row deleted: s1 said it
    [kept] = await memory.facts("alice")
    assert (kept.confidence, kept.source_run, kept.session_id) == (0.5, "r1", "s1")
    assert await memory.forget("alice", session_id="s1") == 1
    left = await memory.export("alice")
    await memory.close()
    assert left["facts"] == left["fact_sources"] == []


async def test_sqlite_memory_at_memory_path_keeps_its_rows_or_is_refused(tmp_path: Path) -> None:
    """`SqliteMemory(":memory:")` (or `memory="sqlite::memory:"`) is accepted, works, and
    silently loses everything when its connection is reopened — after `close()`, and at every
    reconnect for a new event loop, which docs/memory.md says the backends do. A user expects
    either the rows kept or the path refused with a typed error naming it.
    Cause: memory/sqlite.py passes the path to SQLite, whose ":memory:" is a private
    database per connection."""
    try:
        memory = SqliteMemory(":memory:")
        await memory.set_block("alice", "persona", "Alice is a vet in Porto.")
    except LoomgraphError as err:  # refused: fine, if it says why
        assert ":memory:" in str(err)
        return
    await memory.close()  # the next use opens the store again
    blocks = await memory.get_blocks("alice")
    await memory.close()
    assert blocks == {"persona": "Alice is a vet in Porto."}, "the stored block was lost"


async def test_sqlite_memory_refuses_the_empty_path_too() -> None:
    """`SqliteMemory("")` is SQLite's private temporary database of one connection: lost
    at the next reconnect like ":memory:", so refused the same way, naming the fix."""
    with pytest.raises(MemoryInputError, match="InMemoryMemory"):
        SqliteMemory("")


@pytest.mark.postgres
async def test_postgres_remembers_a_long_answer_sqlite_keeps(
    pg_schema: str, tmp_path: Path
) -> None:
    """A run's answer of 1.35 million characters of varied tokens (a log, ids, code — within
    the prompt and tool limits of the Agent) is kept by SqliteMemory and InMemoryMemory, but
    PostgresMemory refuses it ("string is too long for tsvector", max 1 MB), so on Postgres
    that turn is missing from the session's history — not the same behaviour on every
    backend, as docs/memory.md promises.
    Cause: the generated `search tsvector` column of memory_episodes (memory/postgres.py
    `ddl`) indexes the whole prompt and output."""
    from loomgraph.memory.postgres import PostgresMemory

    rnd = random.Random(1)
    text = " ".join(
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8)) for _ in range(150_000)
    )
    episode = Episode("alice", "s1", "r1", "summarise the log", text, [], time.time())
    sqlite = SqliteMemory(tmp_path / "m.db")
    await sqlite.remember(episode)
    assert len(await sqlite.episodes("alice")) == 1
    await sqlite.close()
    memory = PostgresMemory(pg.postgres_dsn(), schema=pg_schema)
    try:
        await memory.remember(episode)
        kept = await memory.episodes("alice")
    except MemoryBackendError as err:
        pytest.fail(f"postgres could not remember what sqlite keeps: {err}"[:300])
    finally:
        await memory.close()
    assert [e.output for e in kept] == [text]


@pytest.mark.postgres
async def test_a_version_2_postgres_schema_is_migrated_by_an_ordinary_owner(pg_schema: str) -> None:
    """A schema as version 2 left it (a generated `search` column over the whole text, no
    statement table), owned by an ordinary role, so row-level security binds it: opening
    it migrates it. Its facts get their statements (read by the owner past the policies:
    forgetting their session deletes them), its episodes keep their search vectors, and a
    1.35-million-character answer is kept from then on."""
    import asyncpg

    from loomgraph.memory.postgres import PostgresMemory

    role = pg.unique_name("loomrole")
    admin = await asyncpg.connect(pg.postgres_dsn())
    await admin.execute(f"CREATE ROLE {role} LOGIN; GRANT ALL ON SCHEMA {pg_schema} TO {role}")
    dsn = pg.postgres_dsn().replace("postgres@", f"{role}@")
    t = f"{pg_schema}.memory_episodes"
    try:
        async with PostgresMemory(dsn, schema=pg_schema) as memory:
            await memory.remember(Episode("alice", "s1", "r1", "I moved", "to Porto", [], 1.0))
            await memory.add_fact("alice", "user", "lives in", "Porto", session_id="s1")
        owner = await asyncpg.connect(dsn)
        try:  # the version-2 shape, made by its owner
            await owner.execute(
                f"DROP TABLE {pg_schema}.memory_fact_sources; "
                f"DROP TRIGGER memory_episodes_search ON {t}; "
                f"DROP FUNCTION {pg_schema}.memory_episodes_search(); "
                f"ALTER TABLE {t} DROP COLUMN search; ALTER TABLE {t} ADD COLUMN search "
                "tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, prompt || "
                f"' ' || output)) STORED; CREATE INDEX ON {t} USING gin (search); "
                f"UPDATE {pg_schema}.memory_meta SET value = '2'"
            )
        finally:
            await owner.close()
        words = [f"w{i:07d}x" for i in range(150_000)]
        long = Episode("alice", "s2", "r2", "the log", " ".join(words), [], 2.0)
        async with PostgresMemory(dsn, schema=pg_schema) as memory:
            assert [e.run_id for e in await memory.search_episodes("alice", "Porto")] == ["r1"]
            await memory.remember(long)
            assert [e.run_id for e in await memory.search_episodes("alice", words[0])] == ["r2"]
            assert await memory.forget("alice", session_id="s1") == 2  # r1 and its fact
            assert await memory.facts("alice") == []
            assert [len(e.output) for e in await memory.episodes("alice")] == [len(long.output)]
        version = await admin.fetchval(f"SELECT value FROM {pg_schema}.memory_meta")
        forced = await admin.fetchval(
            "SELECT relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
            f"{pg_schema}.memory_facts",
        )
        assert (version, forced) == ("3", True)
    finally:
        await admin.execute(
            f"DROP SCHEMA {pg_schema} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        )
        await admin.close()


async def test_a_version_2_sqlite_file_is_migrated_and_its_facts_keep_their_session(
    tmp_path: Path,
) -> None:
    """A file as version 2 left it (no statement table): opening it migrates it, each
    fact's own session and run becoming its first statement, so a fact s1 said before the
    upgrade and s2 says again after it outlives forgetting s1."""
    import sqlite3

    path = tmp_path / "v2.db"
    async with SqliteMemory(path) as memory:
        await memory.add_fact(
            "alice", "user", "lives in", "Porto", source_run="r1", session_id="s1"
        )
        await memory.add_fact("alice", "user", "likes", "tea", session_id="s1")
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE memory_fact_sources")
        db.execute("UPDATE memory_meta SET value = '2'")
    db.close()
    async with SqliteMemory(path) as memory:
        await memory.add_fact("alice", "user", "lives in", "Porto", session_id="s2")
        assert await memory.forget("alice", session_id="s1") == 1  # tea; Porto s2 said too
        assert [(f.object, f.session_id) for f in await memory.facts("alice")] == [("Porto", "s2")]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM memory_meta").fetchone() == ("3",)
    db.close()


# --------------------------------------------------------------------------- wrong results


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_backdated_fact_does_not_supersede_the_newer_one(kind: str, tmp_path: Path) -> None:
    """The user imports an old fact (`Fact(..., valid_from=<ten years ago>)`: "lived in
    Paris") after the current one ("lives in Porto", now). The old fact becomes current and
    is seeded as where the user lives, and Porto gets `valid_to` ten years *before* its own
    `valid_from` — an interval that ends before it starts.
    Cause: `_add_facts` (memory/sql.py, null.py) always ends the current row at the new
    fact's `valid_from`, whatever the order in time."""
    memory = InMemoryMemory() if kind == "memory" else SqliteMemory(tmp_path / "m.db")
    await memory.add_fact("alice", "user", "lives in", "Porto")
    decade_ago = time.time() - 10 * 365 * 86400
    await memory.add_facts("alice", [Fact("user", "lives in", "Paris", valid_from=decade_ago)])
    rows = await memory.facts("alice", include_superseded=True)
    current = [f.object for f in await memory.facts("alice")]
    await memory.close()
    assert all(f.valid_to is None or f.valid_to >= f.valid_from for f in rows), [
        (f.object, f.valid_from, f.valid_to) for f in rows
    ]
    assert current == ["Porto"], "a fact from ten years ago replaced the current one"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_fact_from_between_two_rows_slots_into_the_history(
    kind: str, tmp_path: Path
) -> None:
    """Lisbon from t=1000 and Porto from t=3000, then Paris from t=2000 (an import): Paris
    sits between them, Lisbon ends at 2000 and Porto stays current. "Porto from 2500" (s9)
    states the current row again, now known from 2500 (Paris ends there); forgetting s9
    takes that back."""
    memory = InMemoryMemory() if kind == "memory" else SqliteMemory(tmp_path / "m.db")

    async def add(city: str, at: float, session: str | None = None) -> None:
        fact = Fact("user", "lives in", city, valid_from=at, session_id=session)
        await memory.add_facts("alice", [fact])

    async def history() -> list[tuple[str, float, float | None]]:
        rows = await memory.facts("alice", include_superseded=True)
        return [(f.object, f.valid_from, f.valid_to) for f in rows]

    for city, at in (("Lisbon", 1000.0), ("Porto", 3000.0), ("Paris", 2000.0)):
        await add(city, at)
    assert await history() == [
        ("Porto", 3000.0, None),
        ("Paris", 2000.0, 3000.0),
        ("Lisbon", 1000.0, 2000.0),
    ]
    await add("porto", 2500.0, "s9")
    assert (await history())[:2] == [("Porto", 2500.0, None), ("Paris", 2000.0, 2500.0)]
    assert await memory.forget("alice", session_id="s9") == 0
    assert (await history())[:2] == [("Porto", 3000.0, None), ("Paris", 2000.0, 3000.0)]
    await memory.close()


async def test_equal_ranks_go_to_the_newer_row_in_memory_as_on_sqlite(tmp_path: Path) -> None:
    """Two facts stored together (`add_facts`: same `valid_from`) that match a query equally,
    and two episodes with the same time. docs/memory.md: "Equal ranks go to the newer row",
    and SQLite does (row id descending); InMemoryMemory returns the *older* one first, so
    the seed's order differs between the test backend and production.
    Cause: `bm25_rank` (memory/ranking.py) breaks ties on time only, and its stable sort
    keeps arrival order (oldest first)."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    for kind in ("memory", "sqlite"):
        memory = InMemoryMemory() if kind == "memory" else SqliteMemory(tmp_path / "m.db")
        await memory.add_facts(
            "alice", [Fact("user", "likes", "tea"), Fact("user", "drinks", "tea")]
        )
        at = 1_700_000_000.0
        for run in ("r1", "r2"):
            await memory.remember(Episode("alice", "s1", run, "tea time", "yes tea", [], at))
        facts = [f.predicate for f in await memory.search_facts("alice", "tea")]
        episodes = [e.run_id for e in await memory.search_episodes("alice", "tea")]
        found[kind] = (facts, episodes)
        await memory.close()
    assert found["sqlite"] == (["drinks", "likes"], ["r2", "r1"])  # newer first, as documented
    assert found["memory"] == found["sqlite"]


# --------------------------------------------------------------------------- untyped errors


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.forget("alice", before="2024-01-01"), id="forget-before-str"),
        pytest.param(lambda m: m.episodes("alice", limit=2**64), id="limit-beyond-int64"),
        pytest.param(lambda m: m.facts("alice", limit=2**63), id="facts-limit-beyond-int64"),
        pytest.param(lambda m: m.delete_block("alice", 5), id="delete-block-name-int"),
        pytest.param(lambda m: m.search_facts("alice", 5), id="search-query-int"),
        pytest.param(lambda m: m.search_episodes("alice", None), id="search-episodes-none"),
        pytest.param(lambda m: m.seed(user_id="a", session_id=None, query=b"x"), id="seed-bytes"),
        pytest.param(lambda m: m.forget("alice", before=True), id="forget-before-bool"),
        pytest.param(lambda m: m.forget("alice", before=10**400), id="forget-before-huge-int"),
    ],
)
async def test_bad_arguments_are_typed_memory_errors(call: Any, tmp_path: Path) -> None:
    """A user passes an ISO date string as `before`, a huge `limit`, a non-str block name or
    query. They get a bare AttributeError ('str' object has no attribute 'tzinfo', 'int'
    object has no attribute 'strip'/'casefold') or OverflowError ("Python int too large to
    convert to SQLite INTEGER"; Postgres says MemoryBackendError instead) — not the
    `MemoryInputError` naming the argument that docs/memory.md promises for bad input.
    Cause: `as_time` (records.py), `check_limit` (inputs.py: no upper bound), and
    `delete_block`/`search_*` (base.py) use their argument before checking its type."""
    memory = SqliteMemory(tmp_path / "m.db")
    try:
        with pytest.raises(MemoryInputError):
            await call(memory)
    finally:
        await memory.close()


def test_postgres_memory_refuses_a_pool_of_no_connections_when_made() -> None:
    """`PostgresMemory(dsn, pool_size=0)` was accepted and failed only at first use, as a
    misleading `MemoryUnavailable` from the driver; it is a ValueError when made (no
    server needed)."""
    pytest.importorskip("asyncpg")
    from loomgraph.memory.postgres import PostgresMemory

    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="pool_size"):
            PostgresMemory("postgresql://u@h/db", pool_size=bad)

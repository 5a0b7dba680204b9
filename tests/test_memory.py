"""Long-term memory: one behaviour suite over InMemory, SQLite and Postgres, then each backend.

Postgres tests run against the real server (see tests/pg.py), each in a schema of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

import pg
from loomgraph import Agent
from loomgraph.agent.deps import resolve_memory
from loomgraph.memory import (
    Fact,
    InMemoryMemory,
    MemoryBackendError,
    MemoryCorrupted,
    MemoryLimits,
    MemoryStore,
    MemoryUnavailable,
)
from loomgraph.memory.sqlite import SqliteMemory
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import Episode, Memory, ModelRequest

pg_schema = pg.pg_schema
Factory = Callable[..., MemoryStore]
ALL = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DURABLE = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A maker of memory objects; durable ones all share one store."""
    if kind == "memory":
        shared = InMemoryMemory()

        def make_memory(limits: MemoryLimits | None = None) -> MemoryStore:
            if limits is not None:
                shared.limits = limits
            return shared

        return make_memory
    if kind == "sqlite":
        path = tmp_path / "memory.db"
        return lambda limits=None: SqliteMemory(path, limits=limits)
    from loomgraph.memory.postgres import PostgresMemory

    schema = request.getfixturevalue("pg_schema")
    return lambda limits=None: PostgresMemory(pg.postgres_dsn(), schema=schema, limits=limits)


@pytest.fixture(params=ALL)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Every backend, for the shared behaviour suite."""
    return _factory(request.param, request, tmp_path)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """The database backends only."""
    return _factory(request.param, request, tmp_path)


def ep(
    user: str | None,
    session: str | None,
    run: str,
    prompt: str,
    output: str = "ok",
    at: float = 0.0,
) -> Episode:
    return Episode(user, session, run, prompt, output, [], at)


# --------------------------------------------------------------------------- behaviour suite


async def test_history_is_the_last_turns_of_this_users_session_oldest_first(make: Factory) -> None:
    async with make(MemoryLimits(turns=2)) as memory:
        assert isinstance(memory, Memory)
        for i in range(3):
            await memory.remember(ep("alice", "c1", f"r{i}", f"prompt {i}", f"answer {i}", i))
        await memory.remember(ep("alice", "c2", "other", "elsewhere", at=9))
        await memory.remember(ep("bob", "c1", "bob1", "bob's turn", at=9))
        history = await memory.history(user_id="alice", session_id="c1")
        assert history == [
            {"role": "user", "content": "prompt 1"},
            {"role": "assistant", "content": "answer 1"},
            {"role": "user", "content": "prompt 2"},
            {"role": "assistant", "content": "answer 2"},
        ]
        assert await memory.history(user_id="alice", session_id=None) == []
        await memory.remember(ep("alice", "c1", "r2", "prompt 2 again", "answer", 5))
        assert len(await memory.episodes("alice", session_id="c1")) == 3  # replaced, not added


async def test_seed_is_blocks_then_facts_then_other_sessions_episodes(make: Factory) -> None:
    async with make() as memory:
        await memory.set_block("alice", "persona", "Alice is a veterinarian.")
        await memory.add_fact("alice", "user", "owns", "a cat named Miso")
        await memory.remember(ep("alice", "old", "r1", "My cat Miso hates the vacuum", at=1))
        await memory.remember(ep("alice", "now", "r2", "My cat Miso sleeps a lot", at=2))
        seed = await memory.seed(user_id="alice", session_id="now", query="cat Miso")
        persona, fact, episode = (
            seed.index(s) for s in ("veterinarian", "a cat named Miso", "hates the vacuum")
        )
        assert persona < fact < episode
        assert "sleeps a lot" not in seed  # this session's turns come through history()


async def test_recall_ranks_the_relevant_episode_first_when_it_is_not_the_newest(
    make: Factory,
) -> None:
    async with make() as memory:
        await memory.remember(
            ep(
                "alice",
                "s1",
                "r1",
                "I adopted a kitten called Miso",
                "What a lovely kitten name",
                at=1,
            )
        )
        for i in range(2, 8):
            await memory.remember(
                ep(
                    "alice",
                    f"s{i}",
                    f"r{i}",
                    f"Plan my trip to city {i}",
                    "Here is a plan with a kitten cafe visit",
                    at=i,
                )
            )
        found = await memory.search_episodes("alice", "what was my kitten called?")
        assert found[0].run_id == "r1"
        seed = await memory.seed(user_id="alice", session_id="new", query="kitten called")
        assert "I adopted a kitten called Miso" in seed


async def test_relevance_uses_the_query_never_recency_alone(make: Factory) -> None:
    async with make() as memory:
        await memory.remember(ep("alice", "s1", "r1", "favourite colour is blue", at=1))
        await memory.remember(ep("alice", "s2", "r2", "favourite colour is green", at=2))
        await memory.add_fact("alice", "user", "plays", "cello")
        found = await memory.search_episodes("alice", "favourite colour")
        assert [e.run_id for e in found] == ["r2", "r1"]  # equal rank: newer first
        assert await memory.seed(user_id="alice", session_id="x", query="quantum physics") == ""
        assert await memory.search_facts("alice", "quantum physics") == []


async def test_seed_limits_by_count_and_by_characters(make: Factory) -> None:
    # The room is the seed's characters less the frame that marks memory as recalled data.
    async with make(MemoryLimits(facts=2, episodes=1, seed_chars=600)) as memory:
        for i in range(5):
            await memory.add_fact("alice", f"garden bed {i}", "grows", f"tomato variety {i}")
            await memory.remember(ep("alice", f"s{i}", f"r{i}", f"tomato question {i}", at=i))
        seed = await memory.seed(user_id="alice", session_id="x", query="tomato")
        assert seed.count("- garden bed") == 2 and seed.count("tomato question") == 1
        await memory.set_block("alice", "notes", "n" * 370)
        seed = await memory.seed(user_id="alice", session_id="x", query="tomato")
        assert len(seed) <= 600 and "n" * 370 in seed and "tomato" not in seed


async def test_a_new_object_supersedes_the_old_fact_which_is_kept(make: Factory) -> None:
    async with make() as memory:
        old = await memory.add_fact("alice", "user", "lives in", "Lisbon", source_run="r1")
        same = await memory.add_fact("alice", "User", "lives  in", "lisbon", confidence=0.5)
        assert same.id == old.id and same.confidence == 1.0
        new = await memory.add_fact("alice", "user", "LIVES IN", "Porto", confidence=0.9)
        current = await memory.facts("alice")
        assert [(f.object, f.confidence, f.valid_to) for f in current] == [("Porto", 0.9, None)]
        history = await memory.facts("alice", include_superseded=True)
        lisbon = next(f for f in history if f.object == "Lisbon")
        assert lisbon.valid_to == new.valid_from and lisbon.source_run == "r1"
        assert [f.object for f in await memory.search_facts("alice", "Lisbon Porto")] == ["Porto"]


async def test_a_failed_multi_row_write_leaves_nothing(make: Factory) -> None:
    async with make() as memory:
        await memory.add_fact("alice", "user", "likes", "tea")
        bad = [Fact("user", "likes", "coffee"), Fact("user", "age", "40", confidence=2.0)]
        with pytest.raises(ValueError, match="confidence"):
            await memory.add_facts("alice", bad)
        assert [f.object for f in await memory.facts("alice", include_superseded=True)] == ["tea"]


async def test_working_blocks(make: Factory) -> None:
    async with make(MemoryLimits(block_chars=50)) as memory:
        await memory.set_block("alice", "persona", "a vet")
        await memory.set_block("alice", "prefs", "short answers")
        await memory.set_block("alice", "persona", "a retired vet")
        assert await memory.get_blocks("alice") == {
            "persona": "a retired vet",
            "prefs": "short answers",
        }
        with pytest.raises(ValueError, match="block_chars"):
            await memory.set_block("alice", "prefs", "x" * 51)
        assert await memory.delete_block("alice", "prefs") is True
        assert await memory.delete_block("alice", "prefs") is False
        assert list(await memory.get_blocks("alice")) == ["persona"]


async def test_two_users_with_the_same_session_see_nothing_of_each_other(make: Factory) -> None:
    async with make() as memory:
        await memory.remember(ep("alice", "shared", "a1", "alice secret garden", at=1))
        await memory.add_fact("alice", "alice", "has", "secret garden")
        await memory.set_block("alice", "persona", "alice secret")
        bob, alice_id = "bob", "alice"
        assert await memory.history(user_id=bob, session_id="shared") == []
        assert await memory.seed(user_id=bob, session_id="other", query="secret garden") == ""
        assert await memory.episodes(bob) == [] and await memory.facts(bob) == []
        assert await memory.search_episodes(bob, "secret garden") == []
        assert await memory.get_blocks(bob) == {}
        assert "secret" not in json.dumps(await memory.export(bob))
        assert (await memory.profile(bob))["episodes"] == 0
        assert await memory.forget(bob) == 0
        assert len(await memory.episodes(alice_id)) == 1
        # The anonymous user (None) is a partition of its own, too.
        await memory.remember(ep(None, "shared", "n1", "anonymous turn"))
        assert len(await memory.history(user_id=None, session_id="shared")) == 2
        assert len(await memory.history(user_id=alice_id, session_id="shared")) == 2


async def test_forget_by_session_by_time_and_everything(make: Factory) -> None:
    async with make() as memory:
        await memory.remember(ep("alice", "s1", "r1", "one", at=100))
        await memory.remember(ep("alice", "s1", "r2", "two", at=300))
        await memory.remember(ep("alice", "s2", "r3", "three", at=200))
        await memory.add_facts(
            "alice",
            [
                Fact("user", "said", "one", source_run="r1", valid_from=100),
                Fact("user", "knows", "x", valid_from=250),
            ],
        )
        await memory.set_block("alice", "persona", "p")
        await memory.remember(ep("bob", "s1", "b1", "bob", at=100))
        assert await memory.forget("alice", session_id="s1", before=200) == 2  # r1 + its fact
        assert [e.run_id for e in await memory.episodes("alice")] == ["r3", "r2"]
        cutoff = datetime.fromtimestamp(250.5, UTC)
        assert await memory.forget("alice", before=cutoff) == 2  # r3 and the fact 'knows'
        assert await memory.get_blocks("alice") == {"persona": "p"}  # set just now
        assert await memory.forget("alice") == 2  # r2 and the block
        left = await memory.export("alice")
        assert left["episodes"] == left["facts"] == left["blocks"] == []
        assert len(await memory.episodes("bob")) == 1


async def test_export_and_profile(make: Factory) -> None:
    async with make() as memory:
        await memory.remember(Episode("alice", "s1", "r1", "hi", "hello", ["search"], 10.0))
        await memory.remember(ep("alice", "s2", "r2", "bye", at=20))
        await memory.add_fact("alice", "user", "lives in", "Lisbon")
        await memory.add_fact("alice", "user", "lives in", "Porto")
        await memory.set_block("alice", "persona", "a vet")
        data = json.loads(json.dumps(await memory.export("alice")))
        assert data["user_id"] == "alice"
        assert [e["run_id"] for e in data["episodes"]] == ["r1", "r2"]
        assert data["episodes"][0]["tool_calls"] == ["search"]
        assert sorted(f["object"] for f in data["facts"]) == ["Lisbon", "Porto"]
        assert data["blocks"][0]["name"] == "persona" and data["blocks"][0]["text"] == "a vet"
        profile = await memory.profile("alice")
        assert profile | {"newest_facts": None} == {
            "user_id": "alice",
            "episodes": 2,
            "sessions": 2,
            "facts": 1,
            "superseded_facts": 1,
            "blocks": {"persona": "a vet"},
            "first_seen": 10.0,
            "last_seen": 20.0,
            "newest_facts": None,
        }
        assert profile["newest_facts"] == ["user lives in Porto"]


def _markers(text: str) -> set[str]:
    return set(re.findall(r"marker\d\dx", text))


async def test_100_concurrent_operations_of_20_users_never_cross(make: Factory) -> None:
    async with make() as memory:
        users = [f"{n:02d}" for n in range(20)]

        async def operation(i: int) -> set[str]:
            user = users[i % 20]
            mark = f"marker{user}x"
            kind = i // 20
            if kind == 0:
                await memory.remember(ep(user, "shared", f"r{i}", f"{mark} garden tomatoes"))
            elif kind == 1:
                await memory.add_fact(user, "user", "grows", f"garden tomatoes {mark}")
            elif kind == 2:
                await memory.set_block(user, "notes", f"{mark} garden")
            reads = [
                await memory.seed(user_id=user, session_id="other", query="garden tomatoes"),
                json.dumps(await memory.history(user_id=user, session_id="shared")),
                json.dumps(await memory.export(user)),
            ]
            return {m for text in reads for m in _markers(text)} - {mark}

        leaks = await asyncio.gather(*(operation(i) for i in range(100)))
        assert not any(leaks), leaks
        assert [len(await memory.episodes(u)) for u in users] == [1] * 20


# --------------------------------------------------------------------------- through an Agent


async def test_100_concurrent_runs_of_20_users_on_one_agent(make: Factory) -> None:
    leaks: list[str] = []

    def script(request: ModelRequest) -> str:
        seen = request.system + json.dumps(list(request.messages))
        mine = _markers(str(request.messages[-1]["content"]))
        if _markers(seen) - mine:
            leaks.append(seen)
        return f"noted {' '.join(mine)} garden tomatoes"

    async with make() as memory:
        agent = Agent("x", model=ScriptedModel(script), memory=memory)
        results = await asyncio.gather(
            *(
                agent.run(
                    f"marker{i % 20:02d}x asks about garden tomatoes",
                    user_id=f"u{i % 20}",
                    session_id="shared" if i % 2 else f"s{i % 3}",
                )
                for i in range(100)
            )
        )
        assert all(r.ok for r in results) and not leaks
        history = await memory.history(user_id="u3", session_id="shared")
        assert history and _markers(json.dumps(history)) == {"marker03x"}


# --------------------------------------------------------------------------- durable backends


async def test_a_reopened_store_sees_everything(durable: Factory) -> None:
    async with durable() as memory:
        await memory.remember(ep("alice", "c", "r1", "remember the alamo"))
        await memory.add_fact("alice", "user", "likes", "history")
        await memory.set_block("alice", "persona", "a historian")
    async with durable() as again:
        assert (await again.profile("alice"))["episodes"] == 1
        assert "alamo" in await again.seed(user_id="alice", session_id="d", query="alamo")
        assert (await again.facts("alice"))[0].object == "history"


async def _sql(memory: MemoryStore, statement: str) -> None:
    """Run DDL behind the memory's back, as another program would."""
    if isinstance(memory, SqliteMemory):
        with sqlite3.connect(memory.path) as conn:
            conn.executescript(statement)
        return
    import asyncpg

    conn = await asyncpg.connect(pg.postgres_dsn())
    try:
        await conn.execute(f"SET search_path TO {memory.schema}")  # type: ignore[attr-defined]
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_database_error_mid_write_rolls_the_whole_write_back(durable: Factory) -> None:
    async with durable() as memory:
        await memory.add_fact("alice", "user", "likes", "tea")
        if isinstance(memory, SqliteMemory):
            trigger = (
                "CREATE TRIGGER boom BEFORE INSERT ON memory_facts WHEN new.object = "
                "'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END;"
            )
        else:
            trigger = (
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF new.object = 'boom' THEN RAISE 'boom refused'; END IF; RETURN new; "
                "END $$; CREATE TRIGGER boom BEFORE INSERT ON memory_facts "
                "FOR EACH ROW EXECUTE FUNCTION boom();"
            )
        await _sql(memory, trigger)
        facts = [Fact("user", "likes", "coffee"), Fact("user", "owns", "boom")]
        with pytest.raises(MemoryBackendError, match="boom refused") as caught:
            await memory.add_facts("alice", facts)
        assert caught.value.where.split()[0] in ("sqlite", "postgres")
        stored = await memory.facts("alice", include_superseded=True)
        assert [(f.object, f.valid_to) for f in stored] == [("tea", None)]


async def test_a_dropped_table_is_a_typed_error_naming_the_backend(durable: Factory) -> None:
    async with durable() as memory:
        await memory.remember(ep("alice", "c", "r1", "hello"))
        await _sql(memory, "DROP TABLE memory_blocks")
        with pytest.raises(MemoryCorrupted, match=r"(sqlite|postgres) memory .*memory_blocks"):
            await memory.get_blocks("alice")
    with pytest.raises(MemoryCorrupted, match=r"missing table.*memory_blocks"):
        async with durable():
            pass


async def test_another_schema_version_is_refused(durable: Factory) -> None:
    async with durable() as memory:
        await _sql(memory, "UPDATE memory_meta SET value = '99'")
    with pytest.raises(MemoryCorrupted, match="schema version 99"):
        async with durable():
            pass


# --------------------------------------------------------------------------- SQLite


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is a text file, not a database" * 10, "no SQLite header"),
        (b"SQLite format 3\x00" + b"\x10\x00" + b"\x00" * 60, "truncated"),
    ],
)
async def test_sqlite_refuses_files_that_are_not_intact_databases(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(MemoryCorrupted, match=rf"sqlite memory .*{expected}"):
        await SqliteMemory(path).remember(ep("alice", "c", "r", "x"))
    assert path.read_bytes() == content  # nothing written


async def test_sqlite_finds_damaged_pages_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with SqliteMemory(path) as memory:
        for i in range(200):
            await memory.remember(ep("alice", "c", f"r{i}", "padding " * 50))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 8192] = b"\xff" * 8192  # overwrite pages in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(MemoryCorrupted, match="sqlite memory"):
        await SqliteMemory(path).connect()


async def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    memory = SqliteMemory(tmp_path / "nope" / "memory.db")
    with pytest.raises(MemoryUnavailable, match=r"sqlite memory .*does not exist"):
        await memory.seed(user_id="a", session_id="s", query="q")


async def test_sqlite_memory_can_share_a_file_with_the_journal(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'bot.db'}"
    agent = Agent("x", model="echo", memory=spec, runtime=spec)
    await agent.run("hello there", user_id="alice", session_id="c")
    assert len(await agent.runs()) == 1
    memory = agent.deps.memory
    assert isinstance(memory, SqliteMemory)
    assert len(await memory.history(user_id="alice", session_id="c")) == 2
    await memory.close()


SECOND_PROCESS = textwrap.dedent("""
    import asyncio, json, sys
    from loomgraph import Agent
    from loomgraph.models.scripted import ScriptedModel

    seen = []

    def script(request):
        seen.append([m["content"] for m in request.messages])
        return "the second process answers"

    async def main():
        agent = Agent("x", model=ScriptedModel(script), memory="sqlite:" + sys.argv[1])
        await agent.run("what did I say first?", user_id="alice", session_id="conv")
        await agent.run("hello", user_id="bob", session_id="conv")
        await agent.deps.memory.close()

    asyncio.run(main())
    print(json.dumps(seen))
""")


async def test_a_conversation_continues_in_a_second_process(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    agent = Agent("x", model="echo", memory=f"sqlite:{db}")
    assert isinstance(resolve_memory(f"sqlite:{db}"), SqliteMemory)
    await agent.run("my name is Ada", user_id="alice", session_id="conv")
    await agent.run("I live in Lisbon", user_id="alice", session_id="conv")
    await agent.deps.memory.close()  # type: ignore[attr-defined]
    script = tmp_path / "second.py"
    script.write_text(SECOND_PROCESS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    alice, bob = json.loads(done.stdout.strip().splitlines()[-1])
    assert alice == [
        "my name is Ada",
        "my name is Ada",
        "I live in Lisbon",
        "I live in Lisbon",
        "what did I say first?",
    ]
    assert bob == ["hello"]
    async with SqliteMemory(db) as memory:
        turns = await memory.history(user_id="alice", session_id="conv")
        assert turns[-1]["content"] == "the second process answers"


# --------------------------------------------------------------------------- Postgres


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("dsn", "detail"),
    [
        ("postgresql://postgres:hunter2@127.0.0.1:5432/no_such_database_x", "no_such_database_x"),
        ("postgresql://postgres:hunter2@127.0.0.1:1/test", "127.0.0.1:1"),
    ],
)
async def test_postgres_wrong_dsn_or_unreachable_server_is_unavailable(
    pg_schema: str, dsn: str, detail: str
) -> None:
    from loomgraph.memory.postgres import PostgresMemory

    memory = PostgresMemory(dsn, schema=pg_schema, connect_timeout=5)
    with pytest.raises(MemoryUnavailable, match="postgres memory") as caught:
        await memory.history(user_id="a", session_id="s")
    assert detail in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.postgres
async def test_postgres_row_level_security_admits_only_the_set_user(pg_schema: str) -> None:
    import asyncpg

    from loomgraph.memory.postgres import PostgresMemory

    role = pg.unique_name("loomrole")
    admin = await asyncpg.connect(pg.postgres_dsn())
    await admin.execute(f"CREATE ROLE {role} LOGIN; GRANT ALL ON SCHEMA {pg_schema} TO {role}")
    dsn = pg.postgres_dsn().replace("postgres@", f"{role}@")
    try:
        memory = PostgresMemory(dsn, schema=pg_schema)
        await memory.remember(ep("alice", "shared", "a1", "alice's turn"))
        await memory.remember(ep("bob", "shared", "b1", "bob's turn"))
        assert [e.run_id for e in await memory.episodes("bob")] == ["b1"]
        conn = await asyncpg.connect(dsn)
        try:
            table = f"{pg_schema}.memory_episodes"
            # No user filter in these queries: the policies alone decide.
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
            async with conn.transaction():  # a setting that ended leaves '' behind, not NULL
                await conn.execute("SELECT set_config('loomgraph.user_id', 'u:bob', true)")
            await memory.remember(ep(None, "s", "anon", "anonymous turn"))
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
            async with conn.transaction():
                await conn.execute("SELECT set_config('loomgraph.user_id', 'u:alice', true)")
                assert [r[0] for r in await conn.fetch(f"SELECT run_id FROM {table}")] == ["a1"]
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(
                        f"INSERT INTO {table} (user_id, run_id, prompt, output, "
                        "tool_calls, at) VALUES ('bob', 'x', '', '', '[]', 0)"
                    )
        finally:
            await conn.close()
            await memory.close()
    finally:
        await admin.execute(
            f"DROP SCHEMA {pg_schema} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        )
        await admin.close()

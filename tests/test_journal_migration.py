"""A journal written with schema version 1 is rewritten as version 2 when opened, and reads
back the same records (docs/runtime.md, "Schema"; docs/decisions.md)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import pg
from loomgraph.protocols import EffectStatus, Transition, Usage
from loomgraph.protocols.runtime import EffectRecord
from loomgraph.runtime.errors import JournalCorrupted, JournalVersionError
from loomgraph.runtime.schema import SCHEMA_VERSION
from loomgraph.runtime.sql_journal import SqlJournal
from loomgraph.runtime.sqlite import SqliteRuntime

RUN = "0123456789abcdef0123456789abcdef"
pg_schema = pg.pg_schema


def v1_journal(p: str, i: str, r: str, j: str, serial: str) -> list[str]:
    """A version-1 journal as loomgraph 0.1 wrote it: its DDL, and one run with three
    transitions (a snapshot at seq 2) and three effects (one key without the run-id prefix,
    one left pending by a crash)."""
    return [
        f"CREATE TABLE {p}journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE {p}runs (n {serial}, run_id TEXT NOT NULL UNIQUE, "
        f"graph_name TEXT NOT NULL, graph_hash TEXT NOT NULL, user_id TEXT, session_id TEXT, "
        f"status TEXT NOT NULL, reason TEXT NOT NULL, parent_run_id TEXT, parent_seq {i}, "
        f"deadline {r}, created_at {r} NOT NULL, updated_at {r} NOT NULL, result {j}, "
        f"initial {j}, v {i} NOT NULL, recoveries {i} NOT NULL DEFAULT 0)",
        f"CREATE INDEX runs_user ON {p}runs (user_id)",
        f"CREATE TABLE {p}transitions (run_id TEXT NOT NULL REFERENCES "
        f"{p}runs (run_id), seq {i} NOT NULL, node TEXT NOT NULL, visit {i} NOT NULL, "
        f"patch {j} NOT NULL, next_node TEXT NOT NULL, usage {j} NOT NULL, at {r} NOT NULL, "
        f"v {i} NOT NULL, PRIMARY KEY (run_id, seq))",
        f"CREATE TABLE {p}snapshots (run_id TEXT NOT NULL REFERENCES "
        f"{p}runs (run_id), seq {i} NOT NULL, state {j} NOT NULL, v {i} NOT NULL, "
        f"PRIMARY KEY (run_id, seq))",
        f"CREATE TABLE {p}effects (n {serial}, run_id TEXT NOT NULL "
        f"REFERENCES {p}runs (run_id), key TEXT NOT NULL, kind TEXT NOT NULL, "
        f"intent {j} NOT NULL, outcome {j}, status TEXT NOT NULL, attempts {i} NOT NULL, "
        f"v {i} NOT NULL, recovered {i} NOT NULL DEFAULT 0, UNIQUE (run_id, key))",
        f"CREATE TABLE {p}leases (run_id TEXT PRIMARY KEY REFERENCES "
        f"{p}runs (run_id), owner TEXT NOT NULL, acquired_at {r} NOT NULL, "
        f"expires_at {r} NOT NULL, token {i} NOT NULL DEFAULT 1)",
        f"CREATE TABLE {p}graphs (hash TEXT PRIMARY KEY, name TEXT NOT NULL, "
        f"spec {j} NOT NULL, v {i} NOT NULL)",
        f"INSERT INTO {p}journal_meta VALUES ('schema_version', '1')",
        f"INSERT INTO {p}graphs VALUES ('h1', 'react', '{{\"graph\":{{}}}}', 1)",
        f"INSERT INTO {p}runs (run_id, graph_name, graph_hash, user_id, status, reason, "
        "created_at, updated_at, v) VALUES ('other', 'react', 'h1', 'u2', 'completed', '', "
        "1.0, 2.0, 1)",
        f"INSERT INTO {p}runs (run_id, graph_name, graph_hash, user_id, status, reason, "
        f"created_at, updated_at, v) VALUES ('{RUN}', 'react', 'h1', 'u1', 'running', '', "
        "1.0, 2.0, 1)",
        *(
            f"INSERT INTO {p}transitions VALUES ('{RUN}', {seq}, 'model', {seq}, "
            f"'{{\"n\":{seq}}}', 'tools', '{{\"input_tokens\":{seq}}}', {1000 + seq}.5, 1)"
            for seq in (1, 2, 3)
        ),
        f"INSERT INTO {p}snapshots VALUES ('{RUN}', 2, '{{\"n\":2}}', 1)",
        f"INSERT INTO {p}effects (run_id, key, kind, intent, outcome, status, attempts, v) "
        f"VALUES ('{RUN}', '{RUN}:model:1:1', 'model', '{{}}', '{{\"text\":\"hi\"}}', "
        "'done', 1, 1)",
        f"INSERT INTO {p}effects (run_id, key, kind, intent, outcome, status, attempts, v) "
        f"VALUES ('{RUN}', 'custom-key', 'tool', '{{\"a\":1}}', NULL, 'pending', 1, 1)",
        f"INSERT INTO {p}effects (run_id, key, kind, intent, outcome, status, attempts, v, "
        f"recovered) VALUES ('{RUN}', '{RUN}:tools:1:c', 'tool', '{{}}', '{{\"ok\":1}}', "
        "'done', 2, 1, 1)",
    ]


async def _reads_back(journal: SqlJournal) -> None:
    """The version-1 records, read through a version-2 journal, which then goes on."""
    transitions = await journal.transitions(RUN)
    assert [(t.seq, t.patch, t.usage.input_tokens, t.at) for t in transitions] == [
        (1, {"n": 1}, 1, 1001.5),
        (2, {"n": 2}, 2, 1002.5),
        (3, {"n": 3}, 3, 1003.5),
    ]
    assert [t.snapshot for t in transitions] == [None, {"n": 2}, None]
    assert await journal.latest_snapshot(RUN) == (2, {"n": 2})
    effects = await journal.effects(RUN)
    assert [(e.key, e.status, e.attempts, e.recovered, e.outcome) for e in effects] == [
        (f"{RUN}:model:1:1", EffectStatus.DONE, 1, False, {"text": "hi"}),
        ("custom-key", EffectStatus.PENDING, 1, False, None),
        (f"{RUN}:tools:1:c", EffectStatus.DONE, 2, True, {"ok": 1}),
    ]
    assert [r.run_id for r in await journal.runs()] == ["other", RUN]
    graph = await journal.graph("h1")
    assert graph is not None and graph.spec == {"graph": {}}
    # A crashed effect found again is unknown_after_crash, as before the migration.
    again = await journal.begin_effect(EffectRecord(RUN, "custom-key", "tool", {"a": 1}))
    assert again is not None and again.status == EffectStatus.UNKNOWN_AFTER_CRASH
    await journal.end_effect(RUN, "custom-key", {"ok": 2}, EffectStatus.DONE)
    await journal.append_transition(Transition(RUN, 4, "tools", 1, {}, "model", Usage(), 9.0))
    assert [t.seq for t in await journal.transitions(RUN)] == [1, 2, 3, 4]
    new = EffectRecord(RUN, f"{RUN}:model:2:1", "model", {})
    assert await journal.begin_effect(new) is None
    keys = [e.key for e in await journal.effects(RUN)]
    assert keys == [f"{RUN}:model:1:1", "custom-key", f"{RUN}:tools:1:c", f"{RUN}:model:2:1"]


async def test_sqlite_version_1_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        for statement in v1_journal("", "INTEGER", "REAL", "TEXT", "INTEGER PRIMARY KEY"):
            raw.execute(statement)
    raw.close()
    async with SqliteRuntime(path) as journal:
        await _reads_back(journal)
    with sqlite3.connect(path) as raw:
        version = raw.execute("SELECT value FROM journal_meta").fetchall()
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = {r[0] for r in raw.execute("SELECT v FROM transitions UNION SELECT v FROM runs")}
    raw.close()
    assert version == [(str(SCHEMA_VERSION),)] and versions == {SCHEMA_VERSION}
    assert tables == {
        "journal_meta",
        "runs",
        "transitions",
        "effects",
        "leases",
        "graphs",
        "audit_outbox",
    }
    async with SqliteRuntime(path) as journal:  # opened again: nothing left to migrate
        assert len(await journal.transitions(RUN)) == 4


def _old_sqlite(tmp_path: Path, change: str) -> Path:
    """A version-1 SQLite journal with one run, changed by the statement `change`."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        for statement in v1_journal("", "INTEGER", "REAL", "TEXT", "INTEGER PRIMARY KEY"):
            raw.execute(statement)
        raw.execute(change)  # no foreign keys are enforced here
    raw.close()
    return path


async def test_sqlite_failed_migration_leaves_version_1(tmp_path: Path) -> None:
    # A table in the way makes the copy fail halfway: nothing of it may remain.
    path = _old_sqlite(tmp_path, "CREATE TABLE transitions_v2 (x INTEGER)")
    with pytest.raises(JournalCorrupted, match="rewriting schema version 1 as 2 failed"):
        async with SqliteRuntime(path):
            pass
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM journal_meta").fetchall() == [("1",)]
        assert raw.execute("SELECT count(*) FROM snapshots").fetchall() == [(1,)]
    raw.close()


async def test_sqlite_rows_of_no_run_are_not_migrated(tmp_path: Path) -> None:
    path = _old_sqlite(tmp_path, "UPDATE transitions SET run_id = 'gone' WHERE seq = 3")
    with pytest.raises(JournalCorrupted, match="1 rows of no run; not migrated"):
        async with SqliteRuntime(path):
            pass
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM journal_meta").fetchall() == [("1",)]
    raw.close()


async def test_sqlite_unknown_old_version_is_refused(tmp_path: Path) -> None:
    path = _old_sqlite(tmp_path, "UPDATE journal_meta SET value = '0'")
    with pytest.raises(JournalVersionError, match="version 0"):
        async with SqliteRuntime(path):
            pass


def test_postgres_version_1_is_migrated(pg_schema: str) -> None:
    from loomgraph.runtime.postgres import PostgresRuntime

    async def main() -> None:
        import asyncpg

        conn = await asyncpg.connect(pg.postgres_dsn())
        try:
            p = f"{pg_schema}."
            for statement in v1_journal(p, "BIGINT", "DOUBLE PRECISION", "json", "BIGSERIAL"):
                await conn.execute(statement.replace("n BIGSERIAL", "n BIGSERIAL PRIMARY KEY"))
        finally:
            await conn.close()
        async with PostgresRuntime(pg.postgres_dsn(), schema=pg_schema) as journal:
            await _reads_back(journal)
        async with PostgresRuntime(pg.postgres_dsn(), schema=pg_schema) as journal:
            assert len(await journal.transitions(RUN)) == 4

    asyncio.run(main())

"""`SqlMemory`: the SQL both database backends share, written once with `?` placeholders.

A backend supplies a transaction bound to one user (`_tx`), its table prefix, the DDL and the
two full-text searches; every statement here names `user_id = ?` so isolation does not rest
on the caller, and Postgres adds row-level security on top.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from loomgraph._storage.cursor import Cursor
from loomgraph.memory.base import MemoryStore
from loomgraph.memory.records import Fact, WorkingBlock, fact_key, same_object
from loomgraph.protocols import Episode

EPISODE_COLS = "session_id, run_id, prompt, output, tool_calls, at"
FACT_COLS = (
    "id, subject, predicate, object, confidence, source_run, valid_from, valid_to, session_id"
)
TABLES = ("memory_meta", "memory_episodes", "memory_facts", "memory_blocks")
# 2: facts carry the session of the run that recorded them (`session_id`), so forgetting a
# session finds the facts of its runs that stored no episode (failed, cancelled, waiting).
SCHEMA_VERSION = 2
READABLE_VERSIONS = ("1", "2")  # a version-1 store is migrated when opened (`migration`)


def migration(prefix: str) -> list[str]:
    """The statements taking a version-1 store (tables under `prefix`) to version 2; run in
    the transaction that opens it, under the creation lock, so it happens once."""
    return [
        f"ALTER TABLE {prefix}memory_facts ADD COLUMN session_id text",
        f"CREATE INDEX memory_facts_session ON {prefix}memory_facts (user_id, session_id)",
        f"UPDATE {prefix}memory_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
    ]


def episode_of(key: str, row: Sequence[Any]) -> Episode:
    """An Episode from a row of EPISODE_COLS."""
    return Episode(key or None, row[0], row[1], row[2], row[3], json.loads(row[4]), float(row[5]))


def fact_of(key: str, row: Sequence[Any]) -> Fact:
    """A Fact from a row of FACT_COLS."""
    return Fact(
        row[1],
        row[2],
        row[3],
        float(row[4]),
        row[5],
        float(row[6]),
        None if row[7] is None else float(row[7]),
        key or None,
        int(row[0]),
        row[8],
    )


class SqlMemory(MemoryStore):
    """Shared statements of SqliteMemory and PostgresMemory."""

    prefix = ""  # where the tables live: '' for SQLite, '"schema".' for Postgres

    @abstractmethod
    def _tx(self, key: str, *, write: bool = False) -> AbstractAsyncContextManager[Cursor]:
        """One transaction acting for user `key`: committed on exit, rolled back on error."""

    async def _lock_user(self, cur: Cursor, key: str) -> None:
        """Serialise fact writes of one user (SQLite's write lock already does)."""

    def t(self, name: str) -> str:
        """A table's qualified name."""
        return f"{self.prefix}{name}"

    # ------------------------------------------------------------------ episodes

    async def _remember(self, key: str, episode: Episode) -> None:
        async with self._tx(key, write=True) as cur:
            await cur.execute(
                f"INSERT INTO {self.t('memory_episodes')} (user_id, {EPISODE_COLS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, run_id) DO UPDATE SET "
                "session_id = excluded.session_id, prompt = excluded.prompt, "
                "output = excluded.output, tool_calls = excluded.tool_calls, at = excluded.at",
                [
                    key,
                    episode.session_id,
                    episode.run_id,
                    str(episode.prompt),
                    str(episode.output),
                    json.dumps([str(c) for c in episode.tool_calls]),
                    float(episode.at),
                ],
            )

    async def _recent(self, key: str, session_id: str, limit: int) -> list[Episode]:
        async with self._tx(key) as cur:
            rows = await cur.fetch(
                f"SELECT {EPISODE_COLS} FROM {self.t('memory_episodes')} "
                "WHERE user_id = ? AND session_id = ? ORDER BY at DESC, id DESC LIMIT ?",
                [key, session_id, limit],
            )
        return [episode_of(key, r) for r in reversed(rows)]

    async def _episodes(self, key: str, session_id: str | None, limit: int | None) -> list[Episode]:
        where, args = "user_id = ?", list[Any]([key])
        if session_id is not None:
            where, args = where + " AND session_id = ?", [*args, session_id]
        sql = (
            f"SELECT {EPISODE_COLS} FROM {self.t('memory_episodes')} WHERE {where} "
            "ORDER BY at DESC, id DESC"
        )
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit]
        async with self._tx(key) as cur:
            rows = await cur.fetch(sql, args)
        return [episode_of(key, r) for r in reversed(rows)]

    # ------------------------------------------------------------------ facts

    async def _add_facts(
        self, key: str, facts: list[Fact], source_episode: str | None
    ) -> list[Fact]:
        table = self.t("memory_facts")
        stored: list[Fact] = []
        async with self._tx(key, write=True) as cur:
            await self._lock_user(cur, key)  # forget takes it too: the check below holds
            if source_episode is not None and not await cur.fetch(
                f"SELECT 1 FROM {self.t('memory_episodes')} WHERE user_id = ? AND run_id = ?",
                [key, source_episode],
            ):
                return stored  # forgotten since it was read: its facts must not come back
            for fact in facts:
                k = fact_key(fact)
                rows = await cur.fetch(
                    f"SELECT {FACT_COLS} FROM {table} WHERE user_id = ? "
                    "AND key = ? AND valid_to IS NULL",
                    [key, k],
                )
                old = fact_of(key, rows[0]) if rows else None
                if old is not None and same_object(old.object, fact.object):
                    if fact.confidence > old.confidence:
                        old.confidence = fact.confidence
                        await cur.execute(
                            f"UPDATE {table} SET confidence = ? WHERE user_id = ? AND id = ?",
                            [fact.confidence, key, old.id],
                        )
                    stored.append(old)
                    continue
                if old is not None:
                    await cur.execute(
                        f"UPDATE {table} SET valid_to = ? WHERE user_id = ? AND id = ?",
                        [fact.valid_from, key, old.id],
                    )
                rows = await cur.fetch(
                    f"INSERT INTO {table} (user_id, key, subject, predicate, object, "
                    "confidence, source_run, valid_from, session_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [
                        key,
                        k,
                        fact.subject,
                        fact.predicate,
                        fact.object,
                        fact.confidence,
                        fact.source_run,
                        fact.valid_from,
                        fact.session_id,
                    ],
                )
                fact.id = int(rows[0][0])
                stored.append(fact)
        return stored

    async def _facts(self, key: str, include_superseded: bool, limit: int | None) -> list[Fact]:
        sql = (
            f"SELECT {FACT_COLS} FROM {self.t('memory_facts')} WHERE user_id = ?"
            + ("" if include_superseded else " AND valid_to IS NULL")
            + " ORDER BY valid_from DESC, id DESC"
        )
        args: list[Any] = [key]
        if limit is not None:
            sql, args = sql + " LIMIT ?", [key, limit]
        async with self._tx(key) as cur:
            rows = await cur.fetch(sql, args)
        return [fact_of(key, r) for r in rows]

    # ------------------------------------------------------------------ blocks

    async def _set_block(self, key: str, name: str, text: str, at: float) -> None:
        async with self._tx(key, write=True) as cur:
            await cur.execute(
                f"INSERT INTO {self.t('memory_blocks')} (user_id, name, text, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, name) DO UPDATE SET "
                "text = excluded.text, updated_at = excluded.updated_at",
                [key, name, text, at, at],
            )

    async def _blocks(self, key: str) -> list[WorkingBlock]:
        async with self._tx(key) as cur:
            rows = await cur.fetch(
                f"SELECT name, text, updated_at FROM "
                f"{self.t('memory_blocks')} WHERE user_id = ? "
                "ORDER BY created_at, name",
                [key],
            )
        return [WorkingBlock(r[0], r[1], float(r[2])) for r in rows]

    async def _delete_block(self, key: str, name: str) -> int:
        async with self._tx(key, write=True) as cur:
            return await cur.execute(
                f"DELETE FROM {self.t('memory_blocks')} WHERE user_id = ? AND name = ?", [key, name]
            )

    # ------------------------------------------------------------------ the user's data

    async def _forget(self, key: str, session_id: str | None, before: float | None) -> int:
        episodes, facts, blocks = (self.t(n) for n in TABLES[1:])
        where, args = "user_id = ?", list[Any]([key])
        if session_id is not None:
            where, args = where + " AND session_id = ?", [*args, session_id]
        if before is not None:
            where, args = where + " AND at < ?", [*args, before]
        older = "" if before is None else " AND valid_from < ?"
        if session_id is not None:
            # The facts the session's runs recorded (stamped with it, whether or not the run
            # finished) and those extracted from its episodes go with it.
            gone = (
                f"user_id = ? AND ((session_id = ?{older}) OR source_run IN "
                f"(SELECT run_id FROM {episodes} WHERE {where}))"
            )
            gone_args = [key, *args[1:], *args]  # args[1:]: the session, then the time
        else:
            gone, gone_args = f"user_id = ?{older}", [key, *args[1:]]
        count = 0
        async with self._tx(key, write=True) as cur:
            await self._lock_user(cur, key)  # no add_facts in between: its episode check holds
            keys = []
            if session_id is not None or before is not None:  # else nothing of theirs is left
                found = await cur.fetch(f"SELECT DISTINCT key FROM {facts} WHERE {gone}", gone_args)
                keys = [str(r[0]) for r in found]
            count += await cur.execute(f"DELETE FROM {facts} WHERE {gone}", gone_args)
            for k in keys:
                await self._relink(cur, key, k)
            if session_id is None:
                count += await cur.execute(
                    f"DELETE FROM {blocks} WHERE user_id = ?"
                    + ("" if before is None else " AND updated_at < ?"),
                    [key, *args[1:]],
                )
            count += await cur.execute(f"DELETE FROM {episodes} WHERE {where}", args)
        return count

    async def _relink(self, cur: Cursor, key: str, k: str) -> None:
        """Mend one (subject, predicate)'s chain after deletions: each kept fact is valid until
        the next kept one (in the order written) begins, and the last is current again."""
        table = self.t("memory_facts")
        rows = await cur.fetch(
            f"SELECT id, valid_from, valid_to FROM {table} WHERE user_id = ? AND key = ? "
            "ORDER BY id",
            [key, k],
        )
        for row_id, valid_to in relinked(
            [(int(r[0]), float(r[1]), None if r[2] is None else float(r[2])) for r in rows]
        ):
            await cur.execute(
                f"UPDATE {table} SET valid_to = ? WHERE user_id = ? AND id = ?",
                [valid_to, key, row_id],
            )

    async def _counts(self, key: str) -> dict[str, Any]:
        async with self._tx(key) as cur:
            ep = (
                await cur.fetch(
                    f"SELECT count(*), count(DISTINCT session_id), min(at), max(at) "
                    f"FROM {self.t('memory_episodes')} WHERE user_id = ?",
                    [key],
                )
            )[0]
            facts = (
                await cur.fetch(
                    "SELECT count(*), coalesce(sum(CASE WHEN valid_to IS NULL THEN 1 ELSE 0 END), "
                    f"0) FROM {self.t('memory_facts')} WHERE user_id = ?",
                    [key],
                )
            )[0]
            blocks = (
                await cur.fetch(
                    f"SELECT count(*) FROM {self.t('memory_blocks')} WHERE user_id = ?", [key]
                )
            )[0]
        return {
            "episodes": int(ep[0]),
            "sessions": int(ep[1]),
            "facts": int(facts[1]),
            "superseded_facts": int(facts[0]) - int(facts[1]),
            "blocks": int(blocks[0]),
            "first_seen": None if ep[2] is None else float(ep[2]),
            "last_seen": None if ep[3] is None else float(ep[3]),
        }


def relinked(chain: Sequence[tuple[int, float, float | None]]) -> list[tuple[int, float | None]]:
    """The (id, valid_to) changes that make `chain` — one (subject, predicate)'s facts as
    (id, valid_from, valid_to), in the order written — a chain again: each valid until the
    next begins, the last current. The reopened one comes last (at most one is current)."""
    changes = []
    for i, (row_id, _, valid_to) in enumerate(chain):
        want = chain[i + 1][1] if i + 1 < len(chain) else None
        if valid_to != want:
            changes.append((row_id, want))
    return sorted(changes, key=lambda c: c[1] is None)

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
FACT_COLS = "id, subject, predicate, object, confidence, source_run, valid_from, valid_to"
TABLES = ("memory_meta", "memory_episodes", "memory_facts", "memory_blocks")
SCHEMA_VERSION = 1


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

    async def _add_facts(self, key: str, facts: list[Fact]) -> list[Fact]:
        table = self.t("memory_facts")
        stored = []
        async with self._tx(key, write=True) as cur:
            await self._lock_user(cur, key)
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
                    "confidence, source_run, valid_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "RETURNING id",
                    [
                        key,
                        k,
                        fact.subject,
                        fact.predicate,
                        fact.object,
                        fact.confidence,
                        fact.source_run,
                        fact.valid_from,
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
        count = 0
        async with self._tx(key, write=True) as cur:
            if session_id is not None:
                # Facts extracted from the forgotten conversation go with it.
                count += await cur.execute(
                    f"DELETE FROM {facts} WHERE user_id = ? AND source_run IN "
                    f"(SELECT run_id FROM {episodes} WHERE {where})",
                    [key, *args],
                )
            else:
                old = "" if before is None else " AND valid_from < ?"
                count += await cur.execute(
                    f"DELETE FROM {facts} WHERE user_id = ?{old}", [key, *args[1:]]
                )
                old = "" if before is None else " AND updated_at < ?"
                count += await cur.execute(
                    f"DELETE FROM {blocks} WHERE user_id = ?{old}", [key, *args[1:]]
                )
            count += await cur.execute(f"DELETE FROM {episodes} WHERE {where}", args)
        return count

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

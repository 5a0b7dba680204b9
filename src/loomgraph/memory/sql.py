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
from loomgraph.memory.chain import Statement, merged, place, relinked, summary
from loomgraph.memory.forgotten import record_forget, remember_args, remember_statement
from loomgraph.memory.records import Fact, WorkingBlock, fact_key
from loomgraph.memory.schema import SOURCE_COLS, TABLES
from loomgraph.protocols import Episode

EPISODE_COLS = "session_id, run_id, prompt, output, tool_calls, at, started_at, fence"
FACT_COLS = (
    "id, subject, predicate, object, confidence, source_run, valid_from, valid_to, session_id"
)


def episode_of(key: str, row: Sequence[Any]) -> Episode:
    """An Episode from a row of EPISODE_COLS."""
    started = None if row[6] is None else float(row[6])
    return Episode(
        key or None,
        row[0],
        row[1],
        row[2],
        row[3],
        json.loads(row[4]),
        float(row[5]),
        started,
        int(row[7]),
    )


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

    async def _remember(self, key: str, episode: Episode) -> bool:
        async with self._tx(key, write=True) as cur:
            await self._lock_user(cur, key)  # forget takes it too: what it forgot is all in
            sql = remember_statement(self.prefix, EPISODE_COLS)
            return await cur.execute(sql, remember_args(key, episode)) > 0

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
        ids: list[int] = []  # the rows stating each fact, in order
        async with self._tx(key, write=True) as cur:
            await self._lock_user(cur, key)  # forget takes it too: the check below holds
            if source_episode is not None and not await cur.fetch(
                f"SELECT 1 FROM {self.t('memory_episodes')} WHERE user_id = ? AND run_id = ?",
                [key, source_episode],
            ):
                return []  # forgotten since it was read: its facts must not come back
            for fact in facts:
                k = fact_key(fact)
                chain = await cur.fetch(
                    f"SELECT id, object, valid_from FROM {table} WHERE user_id = ? AND key = ?",
                    [key, k],
                )
                said = Statement(fact.session_id, fact.source_run, fact.confidence, fact.valid_from)
                row_id = place(
                    [(int(r[0]), str(r[1]), float(r[2])) for r in chain],
                    fact.object,
                    fact.valid_from,
                )
                if row_id is None:  # a row of its own: closed until the chain is relinked
                    rows = await cur.fetch(
                        f"INSERT INTO {table} (user_id, key, subject, predicate, object, "
                        "confidence, source_run, valid_from, valid_to, session_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        [
                            key,
                            k,
                            fact.subject,
                            fact.predicate,
                            fact.object,
                            fact.confidence,
                            fact.source_run,
                            fact.valid_from,
                            fact.valid_from,
                            fact.session_id,
                        ],
                    )
                    row_id = int(rows[0][0])
                await self._state(cur, key, row_id, said)
                await self._relink(cur, key, k)
                ids.append(row_id)
            # As stored: a later fact of the batch may have ended an earlier one.
            one = f"SELECT {FACT_COLS} FROM {table} WHERE user_id = ? AND id = ?"
            return [fact_of(key, (await cur.fetch(one, [key, i]))[0]) for i in ids]

    async def _statements(self, cur: Cursor, key: str, fact_id: int) -> list[tuple[int, Statement]]:
        """A fact's statements with their row ids, in the order written."""
        rows = await cur.fetch(
            f"SELECT id, {SOURCE_COLS} FROM {self.t('memory_fact_sources')} "
            "WHERE user_id = ? AND fact_id = ? ORDER BY id",
            [key, fact_id],
        )
        return [(int(r[0]), Statement(r[1], r[2], float(r[3]), float(r[4]))) for r in rows]

    async def _state(self, cur: Cursor, key: str, fact_id: int, said: Statement) -> None:
        """Add a statement to a fact (or update the one of its run and session), and set the
        row's confidence, provenance and start from all of them."""
        old = await self._statements(cur, key, fact_id)
        now = merged([s for _, s in old], said)
        if len(now) > len(old):
            await cur.execute(
                f"INSERT INTO {self.t('memory_fact_sources')} (user_id, fact_id, {SOURCE_COLS}) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [key, fact_id, said.session_id, said.source_run, said.confidence, said.at],
            )
        else:
            i = next(i for i, (_, s) in enumerate(old) if s.same_source(said))
            await cur.execute(
                f"UPDATE {self.t('memory_fact_sources')} SET confidence = ?, at = ? "
                "WHERE user_id = ? AND id = ?",
                [now[i].confidence, now[i].at, key, old[i][0]],
            )
        await self._summarise(cur, key, fact_id, now)

    async def _summarise(
        self, cur: Cursor, key: str, fact_id: int, statements: list[Statement]
    ) -> None:
        confidence, session_id, source_run, valid_from = summary(statements)
        await cur.execute(
            f"UPDATE {self.t('memory_facts')} SET confidence = ?, session_id = ?, "
            "source_run = ?, valid_from = ? WHERE user_id = ? AND id = ?",
            [confidence, session_id, source_run, valid_from, key, fact_id],
        )

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
        episodes, facts, blocks, sources = (self.t(n) for n in TABLES[1:5])
        where, args = "user_id = ?", list[Any]([key])
        if session_id is not None:
            where, args = where + " AND session_id = ?", [*args, session_id]
        if before is not None:
            where, args = where + " AND at < ?", [*args, before]
        older = "" if before is None else " AND at < ?"
        if session_id is not None:
            # What the session's runs stated (stamped with it, whether or not the run
            # finished) and what was extracted from its episodes go with it.
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
            await record_forget(cur, self.prefix, key, session_id, before, where, args)
            if session_id is None and before is None:
                count += await cur.execute(f"DELETE FROM {facts} WHERE user_id = ?", [key])
                await cur.execute(f"DELETE FROM {sources} WHERE user_id = ?", [key])
            else:
                count += await self._unstate(cur, key, gone, gone_args)
            if session_id is None:
                count += await cur.execute(
                    f"DELETE FROM {blocks} WHERE user_id = ?"
                    + ("" if before is None else " AND updated_at < ?"),
                    [key, *args[1:]],
                )
            count += await cur.execute(f"DELETE FROM {episodes} WHERE {where}", args)
            if count:
                await self._scrub(cur)
        return count

    async def _scrub(self, cur: Cursor) -> None:
        """After `forget` deleted rows, in its transaction: remove the text they leave in the
        store's own structures (SQLite's full-text index pages); nothing by default."""

    async def _unstate(self, cur: Cursor, key: str, gone: str, gone_args: list[Any]) -> int:
        """Delete the statements `gone` selects; a fact left with none goes (the facts
        deleted), one left with others keeps what they say; the chains are then mended."""
        facts, sources = self.t("memory_facts"), self.t("memory_fact_sources")
        found = await cur.fetch(f"SELECT DISTINCT fact_id FROM {sources} WHERE {gone}", gone_args)
        await cur.execute(f"DELETE FROM {sources} WHERE {gone}", gone_args)
        deleted, keys = 0, set[str]()
        for fact_id in sorted(int(r[0]) for r in found):
            row = await cur.fetch(
                f"SELECT key FROM {facts} WHERE user_id = ? AND id = ?", [key, fact_id]
            )
            if not row:
                continue
            keys.add(str(row[0][0]))
            left = [s for _, s in await self._statements(cur, key, fact_id)]
            if left:
                await self._summarise(cur, key, fact_id, left)
            else:
                deleted += await cur.execute(
                    f"DELETE FROM {facts} WHERE user_id = ? AND id = ?", [key, fact_id]
                )
        for k in sorted(keys):
            await self._relink(cur, key, k)
        return deleted

    async def _relink(self, cur: Cursor, key: str, k: str) -> None:
        """Mend one (subject, predicate)'s chain (`chain.relinked`)."""
        table = self.t("memory_facts")
        rows = await cur.fetch(
            f"SELECT id, valid_from, valid_to FROM {table} WHERE user_id = ? AND key = ?",
            [key, k],
        )
        for row_id, valid_to in relinked(
            [(int(r[0]), float(r[1]), None if r[2] is None else float(r[2])) for r in rows]
        ):
            await cur.execute(
                f"UPDATE {table} SET valid_to = ? WHERE user_id = ? AND id = ?",
                [valid_to, key, row_id],
            )

    async def _fact_sources(self, key: str) -> list[dict[str, Any]]:
        async with self._tx(key) as cur:
            rows = await cur.fetch(
                f"SELECT fact_id, {SOURCE_COLS} FROM {self.t('memory_fact_sources')} "
                "WHERE user_id = ? ORDER BY id",
                [key],
            )
        return [
            {
                "fact_id": int(r[0]),
                "session_id": r[1],
                "source_run": r[2],
                "confidence": float(r[3]),
                "at": float(r[4]),
            }
            for r in rows
        ]

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

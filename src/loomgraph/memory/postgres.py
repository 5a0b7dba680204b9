"""`PostgresMemory`: long-term memory in PostgreSQL, with full-text recall and row-level security.

asyncpg is imported when a PostgresMemory is made, so importing loomgraph without the
`postgres` extra still works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from loomgraph._storage import pg_pool
from loomgraph._storage.cursor import Cursor
from loomgraph._storage.dsn import describe_dsn, describe_schema
from loomgraph._storage.lock_keys import advisory_key
from loomgraph.memory.errors import (
    MemoryBackendError,
    MemoryCorrupted,
    MemoryInputError,
    MemoryUnavailable,
)
from loomgraph.memory.records import Fact, MemoryLimits
from loomgraph.memory.schema import (
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    TABLES,
    forgotten_table,
    migration,
    tables_of,
    writer_columns,
)
from loomgraph.memory.sql import EPISODE_COLS, FACT_COLS, SqlMemory, episode_of, fact_of
from loomgraph.protocols import Episode
from loomgraph.protocols.backend_specs import dsn_problem

# The setting the row-level security policies read. It holds 'u:' + the user id: once set in
# a session, an ended SET LOCAL leaves '' behind (not NULL), which must match no user, not
# even the anonymous one (user id '').
SETTING = "loomgraph.user_id"


# An episode's search vector covers the first this-many characters of its prompt and of its
# answer: a tsvector holds at most 1 MB, and one character of text makes at most 6 bytes of
# it (a one-character word in four UTF-8 bytes and its position), so 2 x 64 Ki characters
# always fit, whatever the text. SQLite and the in-memory backend index all of it.
SEARCHED_CHARS = 65536


def _policy(p: str, table: str) -> list[str]:
    """Row-level security on one table: only the rows of the user the transaction set.

    FORCE: the policies bind the tables' owner too (superusers and BYPASSRLS roles are never
    bound; connect as an ordinary role for the policies to matter)."""
    mine = f"'u:' || user_id = current_setting('{SETTING}', true)"
    return [
        f"ALTER TABLE {p}{table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {p}{table} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS memory_by_user ON {p}{table}",
        f"CREATE POLICY memory_by_user ON {p}{table} USING ({mine}) WITH CHECK ({mine})",
    ]


def _search(p: str) -> list[str]:
    """The trigger that sets an episode's `search` vector from the start of its text (a
    generated column could not be bounded later without rewriting the table)."""
    return [
        f"CREATE OR REPLACE FUNCTION {p}memory_episodes_search() RETURNS trigger "
        "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$ BEGIN "
        "NEW.search := to_tsvector('english'::regconfig, "
        f"left(NEW.prompt, {SEARCHED_CHARS}) || ' ' || left(NEW.output, {SEARCHED_CHARS})); "
        "RETURN NEW; END $f$",
        f"DROP TRIGGER IF EXISTS memory_episodes_search ON {p}memory_episodes",
        "CREATE TRIGGER memory_episodes_search BEFORE INSERT OR UPDATE OF prompt, output "
        f"ON {p}memory_episodes FOR EACH ROW EXECUTE FUNCTION {p}memory_episodes_search()",
    ]


def _sources(p: str) -> list[str]:
    """The statements of facts (memory.chain); IF NOT EXISTS: also the migration's."""
    return [
        f"CREATE TABLE IF NOT EXISTS {p}memory_fact_sources (id bigserial PRIMARY KEY, "
        "user_id text NOT NULL, fact_id bigint NOT NULL, session_id text, source_run text, "
        "confidence double precision NOT NULL, at double precision NOT NULL)",
        "CREATE INDEX IF NOT EXISTS memory_fact_sources_fact "
        f"ON {p}memory_fact_sources (user_id, fact_id)",
        "CREATE INDEX IF NOT EXISTS memory_fact_sources_session "
        f"ON {p}memory_fact_sources (user_id, session_id)",
    ]


def ddl(schema: str) -> list[str]:
    """The tables, indexes, trigger and row-level security policies, in `schema`."""
    p = pg_pool.quote_ident(schema) + "."
    statements = [
        f"CREATE TABLE {p}memory_meta (key text PRIMARY KEY, value text NOT NULL)",
        f"CREATE TABLE {p}memory_episodes (id bigserial PRIMARY KEY, user_id text NOT NULL, "
        "session_id text, run_id text NOT NULL, prompt text NOT NULL, output text NOT NULL, "
        "tool_calls text NOT NULL, at double precision NOT NULL, search tsvector, "
        "started_at double precision, fence bigint NOT NULL DEFAULT 0, "
        "UNIQUE (user_id, run_id))",
        *_search(p),
        f"CREATE INDEX ON {p}memory_episodes (user_id, session_id, at)",
        f"CREATE INDEX ON {p}memory_episodes USING gin (search)",
        f"CREATE TABLE {p}memory_facts (id bigserial PRIMARY KEY, user_id text NOT NULL, "
        "key text NOT NULL, subject text NOT NULL, predicate text NOT NULL, "
        "object text NOT NULL, confidence double precision NOT NULL, source_run text, "
        "valid_from double precision NOT NULL, valid_to double precision, session_id text, "
        "search tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, subject || ' ' || predicate "
        "|| ' ' || object)) STORED)",
        # At most one current fact per (user, subject, predicate), whatever the writers do.
        f"CREATE UNIQUE INDEX ON {p}memory_facts (user_id, key) WHERE valid_to IS NULL",
        f"CREATE INDEX ON {p}memory_facts (user_id, valid_from)",
        f"CREATE INDEX memory_facts_session ON {p}memory_facts (user_id, session_id)",
        f"CREATE INDEX ON {p}memory_facts USING gin (search)",
        f"CREATE TABLE {p}memory_blocks (user_id text NOT NULL, name text NOT NULL, "
        "text text NOT NULL, created_at double precision NOT NULL, "
        "updated_at double precision NOT NULL, PRIMARY KEY (user_id, name))",
        *_sources(p),
        *forgotten_table(p),
        f"INSERT INTO {p}memory_meta VALUES ('schema_version', '{SCHEMA_VERSION}')",
    ]
    for table in TABLES[1:]:
        statements += _policy(p, table)
    return statements


def upgrade(schema: str, version: str) -> list[str]:
    """The migration of an older store in `schema` (needs the tables' owner): the statement
    table, filled while the owner reads every user's facts (NO FORCE for this transaction
    only), and the search vector made by the trigger — the generated column becomes a plain
    one, keeping the vectors stored (no rewrite; PostgreSQL 13 or later)."""
    p = pg_pool.quote_ident(schema) + "."
    return migration(
        p,
        version,
        [
            f"ALTER TABLE {p}memory_facts NO FORCE ROW LEVEL SECURITY",
            *_sources(p),
            *forgotten_table(p),
            *writer_columns(p, None),
        ],
        [
            f"ALTER TABLE {p}memory_facts FORCE ROW LEVEL SECURITY",
            *_policy(p, "memory_fact_sources"),
            *_policy(p, "memory_forgotten"),
            f"ALTER TABLE {p}memory_episodes ALTER COLUMN search DROP EXPRESSION IF EXISTS",
            *_search(p),
        ],
    )


class PostgresMemory(SqlMemory):
    """Memory in PostgreSQL tables (in `schema`), shared by any number of workers.

    Every transaction first sets `loomgraph.user_id` for itself (`SET LOCAL`), and the
    tables' row-level security policies admit only that user's rows, on top of the
    `user_id = …` every statement carries. A pool of `pool_size` (≥ 1) connections is
    opened on first use. Recall searches the first `SEARCHED_CHARS` characters of an
    episode's prompt and of its answer (a tsvector holds at most 1 MB).

    `connect_timeout` bounds making a connection and `command_timeout` every statement
    (seconds): a server that is gone or does not answer raises `MemoryUnavailable` within
    them; a call cancelled meanwhile drops its connection (the server rolls back) rather
    than wait for the server's answer to a rollback.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        limits: MemoryLimits | None = None,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float = 15.0,
    ) -> None:
        if (problem := dsn_problem(dsn)) is not None:  # libpq's defaults are nobody's choice
            raise MemoryInputError(f"PostgresMemory: the dsn {problem}")
        pg_pool.checked_timeouts(connect_timeout, command_timeout, error=MemoryInputError)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise MemoryInputError(
                f"PostgresMemory: pool_size must be an int >= 1, not {pool_size!r}"
            )
        super().__init__(limits)
        self._pg = pg_pool.import_asyncpg("PostgresMemory")
        self.dsn = dsn
        self.schema = schema
        self.prefix = pg_pool.quote_ident(schema) + "."
        self.where = f"postgres memory {describe_schema(dsn, schema)}"
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        # Waiting for a pooled connection may mean making one, then a statement on it.
        self._pools = pg_pool.LoopPool(self._open, timeout=connect_timeout + command_timeout)

    def __repr__(self) -> str:
        return f"PostgresMemory({describe_dsn(self.dsn)!r}, schema={self.schema!r})"

    async def connect(self) -> None:
        """Connect, check and (when new) create the tables now rather than on first use."""
        await self._pools.get()

    async def close(self) -> None:
        """Close the pool; the next use opens a new one."""
        await self._pools.close()

    # ------------------------------------------------------------------ sessions

    @asynccontextmanager
    async def _tx(self, key: str, *, write: bool = False) -> AsyncIterator[Cursor]:
        # Work cut off (a timeout, a lost connection, a cancellation) drops the connection:
        # the server rolls back, and no one waits for a ROLLBACK a stalled network would
        # never answer (`LoopPool.cursor`).
        async def as_user(con: Any) -> None:
            # is_local=true: the setting ends with the transaction, so a pooled connection
            # never carries one user's identity into another's work.
            await con.execute("SELECT set_config($1, $2, true)", SETTING, "u:" + key)

        async with self._pools.cursor(
            readonly=not write, translate=self._translate, hide_cause=False, before=as_user
        ) as cur:
            yield cur

    async def _lock_user(self, cur: Cursor, key: str) -> None:
        # Two workers superseding the same fact must not both see it current.
        # 64 bits (not `hashtext`'s 32): two users' ids must not share a lock.
        lock = advisory_key(f"loomgraph.memory:{self.schema}:{key}")
        await cur.execute("SELECT pg_advisory_xact_lock(?)", [lock])

    def _translate(self, err: Exception) -> Exception:
        pg = self._pg
        if isinstance(err, MemoryBackendError):
            return err
        if isinstance(err, pg.UndefinedTableError | pg.UndefinedColumnError):
            return MemoryCorrupted(self.where, str(err))
        why = pg_pool.out_of_service(pg, err, self.dsn, self.connect_timeout, self.command_timeout)
        if why is not None:  # (a database or role that does not exist included)
            return MemoryUnavailable(self.where, why)
        if isinstance(err, pg.PostgresError):
            return MemoryBackendError(self.where, pg_pool.failure(self.dsn, err))
        return err

    # ------------------------------------------------------------------ search

    async def _search_episodes(
        self, key: str, terms: list[str], exclude_session: str | None, limit: int
    ) -> list[Episode]:
        cols = ", ".join(f"e.{c.strip()}" for c in EPISODE_COLS.split(","))
        other, args = "", [" or ".join(terms), key]
        if exclude_session is not None:
            other, args = " AND e.session_id IS DISTINCT FROM ?", [*args, exclude_session]
        async with self._tx(key) as cur:
            # websearch_to_tsquery never raises on odd input; ts_rank normalisation 1
            # keeps long answers from winning on length alone.
            rows = await cur.fetch(
                f"SELECT {cols} FROM {self.t('memory_episodes')} e, "
                "websearch_to_tsquery('english', ?) q WHERE e.search @@ q AND e.user_id = ?"
                f"{other} ORDER BY ts_rank(e.search, q, 1) DESC, e.at DESC, e.id DESC LIMIT ?",
                [*args, limit],
            )
        return [episode_of(key, r) for r in rows]

    async def _search_facts(self, key: str, terms: list[str], limit: int) -> list[Fact]:
        cols = ", ".join(f"x.{c.strip()}" for c in FACT_COLS.split(","))
        async with self._tx(key) as cur:
            rows = await cur.fetch(
                f"SELECT {cols} FROM {self.t('memory_facts')} x, "
                "websearch_to_tsquery('english', ?) q WHERE x.search @@ q AND x.user_id = ? "
                "AND x.valid_to IS NULL ORDER BY ts_rank(x.search, q, 1) DESC, "
                "x.valid_from DESC, x.id DESC LIMIT ?",
                [" or ".join(terms), key, limit],
            )
        return [fact_of(key, r) for r in rows]

    # ------------------------------------------------------------------ opening

    async def _open(self) -> Any:
        """Connect; create the schema and tables when missing; refuse damaged or other ones."""
        return await pg_pool.open_pool(
            self._pg,
            self.dsn,
            pool_size=self.pool_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            lock=f"loomgraph.memory:{self.schema}",
            setup=self._create_or_check,
            unavailable=lambda detail: MemoryUnavailable(self.where, detail),
            translate=self._translate,
        )

    async def _create_or_check(self, con: Any) -> None:
        found = {
            t: await con.fetchval("SELECT to_regclass($1)", f"{self.prefix}{t}") for t in TABLES
        }
        if found["memory_meta"] is None:
            if any(found.values()):
                raise MemoryCorrupted(self.where, "memory tables without memory_meta")
            if (
                await con.fetchval("SELECT to_regnamespace($1)", pg_pool.quote_ident(self.schema))
                is None
            ):
                # Only when missing: even IF NOT EXISTS needs CREATE on the whole database.
                await con.execute(f"CREATE SCHEMA {pg_pool.quote_ident(self.schema)}")
            for statement in ddl(self.schema):
                await con.execute(statement)
            return
        version = await con.fetchval(
            f"SELECT value FROM {self.prefix}memory_meta WHERE key = 'schema_version'"
        )
        if version not in READABLE_VERSIONS:
            raise MemoryCorrupted(
                self.where,
                f"schema version {version or 'none'}; this "
                f"loomgraph reads version {SCHEMA_VERSION}",
            )
        missing = [t for t in tables_of(version) if found[t] is None]
        if missing:
            raise MemoryCorrupted(self.where, f"missing table(s): {', '.join(missing)}")
        if version != str(SCHEMA_VERSION):  # older: migrated under the creation lock
            for statement in upgrade(self.schema, version):
                await con.execute(statement)

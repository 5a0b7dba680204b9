"""The memory tables' schema version, and the migration of an older store when it is opened.

Each version the code writes is refused by an older loomgraph ("another schema version"),
so two versions never write one store at once.
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = [
    "EPISODE_WRITER",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "SOURCE_COLS",
    "TABLES",
    "forgotten_table",
    "migration",
    "tables_of",
    "writer_columns",
]

SOURCE_COLS = "session_id, source_run, confidence, at"  # a fact's statements (memory.chain)
# The columns of an episode saying who wrote it (a migration adds them): when its run
# started, and the fencing token of its writer's lease (`Episode.started_at`, `.fence`).
EPISODE_WRITER = (("started_at", "double precision"), ("fence", "bigint NOT NULL DEFAULT 0"))
TABLES = (
    "memory_meta",
    "memory_episodes",
    "memory_facts",
    "memory_blocks",
    "memory_fact_sources",
    "memory_forgotten",
)
# 2: facts carry the session of the run that recorded them (`session_id`), so forgetting a
# session finds the facts of its runs that stored no episode (failed, cancelled, waiting).
# 3: every run that stated a fact is kept (`memory_fact_sources`), so forgetting one session
# keeps a fact another session stated too; and what `forget` forgot (`memory_forgotten`: ids
# and times, no content) and who wrote each episode (`started_at`, `fence`), so no later
# write brings a forgotten turn back and a zombie writer never replaces a newer one's.
SCHEMA_VERSION = 3
READABLE_VERSIONS = ("1", "2", "3")  # an older store is migrated when opened (`migration`)


def tables_of(version: str) -> tuple[str, ...]:
    """The tables a store of `version` must have (a migration adds the newer ones)."""
    return TABLES if version == str(SCHEMA_VERSION) else TABLES[:4]


def forgotten_table(prefix: str) -> list[str]:
    """What `forget` forgot (`IF NOT EXISTS`: also the migration's), the same on both
    databases: a row per forgotten episode (its `run_id`), and one per `forget` (no
    `run_id`: the session it covered or NULL for all, its `before` bound as `older_than`,
    and when it was made)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {prefix}memory_forgotten (user_id text NOT NULL, "
        "session_id text, run_id text, older_than double precision, "
        "forgotten_at double precision NOT NULL)",
        "CREATE INDEX IF NOT EXISTS memory_forgotten_run "
        f"ON {prefix}memory_forgotten (user_id, run_id)",
    ]


def writer_columns(prefix: str, have: Collection[str] | None) -> list[str]:
    """The statements adding the `EPISODE_WRITER` columns `memory_episodes` lacks: those not
    in `have`, or (None: a database that takes it) each `IF NOT EXISTS`."""
    table = f"{prefix}memory_episodes"
    if have is None:
        return [
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}"
            for name, kind in EPISODE_WRITER
        ]
    return [
        f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
        for name, kind in EPISODE_WRITER
        if name not in have
    ]


def migration(prefix: str, version: str, create: list[str], after: list[str]) -> list[str]:
    """The statements taking a store of an older `version` (tables under `prefix`) to the
    current one; run in the transaction that opens it, under the creation lock, so it
    happens once. `create` makes the backend's statement and forget tables (`IF NOT
    EXISTS`) and adds the episodes' writer columns (`EPISODE_WRITER`) it lacks; every
    fact's own provenance then fills the statement table as its first statement; `after`
    follows that."""
    steps = []
    if version == "1":
        steps += [
            f"ALTER TABLE {prefix}memory_facts ADD COLUMN session_id text",
            f"CREATE INDEX IF NOT EXISTS memory_facts_session ON {prefix}memory_facts "
            "(user_id, session_id)",
        ]
    return [
        *steps,
        *create,
        f"INSERT INTO {prefix}memory_fact_sources (user_id, fact_id, {SOURCE_COLS}) "
        "SELECT f.user_id, f.id, f.session_id, f.source_run, f.confidence, f.valid_from "
        f"FROM {prefix}memory_facts f WHERE NOT EXISTS (SELECT 1 FROM "
        f"{prefix}memory_fact_sources s WHERE s.user_id = f.user_id AND s.fact_id = f.id)",
        *after,
        f"UPDATE {prefix}memory_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
    ]

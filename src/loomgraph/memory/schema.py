"""The memory tables' schema version, and the migration of an older store when it is opened.

Each version the code writes is refused by an older loomgraph ("another schema version"),
so two versions never write one store at once.
"""

from __future__ import annotations

__all__ = [
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "SOURCE_COLS",
    "TABLES",
    "migration",
    "tables_of",
]

SOURCE_COLS = "session_id, source_run, confidence, at"  # a fact's statements (memory.chain)
TABLES = ("memory_meta", "memory_episodes", "memory_facts", "memory_blocks", "memory_fact_sources")
# 2: facts carry the session of the run that recorded them (`session_id`), so forgetting a
# session finds the facts of its runs that stored no episode (failed, cancelled, waiting).
# 3: every run that stated a fact is kept (`memory_fact_sources`), so forgetting one session
# keeps a fact another session stated too.
SCHEMA_VERSION = 3
READABLE_VERSIONS = ("1", "2", "3")  # an older store is migrated when opened (`migration`)


def tables_of(version: str) -> tuple[str, ...]:
    """The tables a store of `version` must have (a migration adds the newer ones)."""
    return TABLES if version == str(SCHEMA_VERSION) else TABLES[:4]


def migration(prefix: str, version: str, create: list[str], after: list[str]) -> list[str]:
    """The statements taking a store of an older `version` (tables under `prefix`) to the
    current one; run in the transaction that opens it, under the creation lock, so it
    happens once. `create` makes the backend's statement table (`IF NOT EXISTS`), which
    every fact's own provenance then fills as its first statement; `after` follows that."""
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

"""What `forget` forgot, in the SQL backends (`memory_forgotten`: ids and times, no text), and
the statement `remember` stores an episode with only when nothing forgotten covers it and no
higher fence wrote it (`MemoryStore.remember`).

A row with a `run_id` is a run whose episode a forget deleted: no episode of it is stored
again. A row without one is a forget itself (its session, NULL for all; its `before` bound as
`older_than`; when it was made): it covers an episode memory did not hold then whose run had
started before it and that it would have deleted (the session matches, `at` before the bound)
— an episode owed, or of a run under way or cut off. An episode held then was deleted (a run
row) or kept by that forget, so a forget's row never covers an episode stored already.
"""

from __future__ import annotations

import json
from typing import Any

from loomgraph._storage.cursor import Cursor
from loomgraph.memory.records import now
from loomgraph.protocols import Episode

__all__ = ["record_forget", "remember_args", "remember_statement"]


def remember_statement(prefix: str, cols: str) -> str:
    """Insert or replace an episode (`remember_args`, in the order of `cols`) in one
    statement, or change nothing: not of a run a forget deleted the episode of; stored
    already, or no forget since its run started would have deleted it; a stored one
    replaced only from an equal or higher fence."""
    episodes, forgotten = f"{prefix}memory_episodes", f"{prefix}memory_forgotten"
    # The casts: Postgres gives a parameter in a SELECT list no type of its own.
    return (
        f"INSERT INTO {episodes} AS cur (user_id, {cols}) SELECT "
        "CAST(? AS text), CAST(? AS text), CAST(? AS text), CAST(? AS text), CAST(? AS text), "
        "CAST(? AS text), CAST(? AS double precision), CAST(? AS double precision), "
        "CAST(? AS bigint) WHERE NOT EXISTS "
        f"(SELECT 1 FROM {forgotten} WHERE user_id = ? AND run_id = ?) AND "
        f"(EXISTS (SELECT 1 FROM {episodes} WHERE user_id = ? AND run_id = ?) OR "
        f"NOT EXISTS (SELECT 1 FROM {forgotten} WHERE user_id = ? AND run_id IS NULL "
        "AND (session_id IS NULL OR session_id = ?) AND forgotten_at > ? "
        "AND (older_than IS NULL OR older_than > ?))) "
        "ON CONFLICT (user_id, run_id) DO UPDATE SET session_id = excluded.session_id, "
        "prompt = excluded.prompt, output = excluded.output, tool_calls = excluded.tool_calls, "
        "at = excluded.at, started_at = excluded.started_at, fence = excluded.fence "
        "WHERE cur.fence <= excluded.fence"
    )


def remember_args(key: str, ep: Episode) -> list[Any]:
    """The arguments of `remember_statement` for user `key`'s episode `ep`."""
    run, session, at = ep.run_id, ep.session_id, float(ep.at)
    calls = json.dumps([str(c) for c in ep.tool_calls])
    row = [key, session, run, str(ep.prompt), str(ep.output), calls, at, ep.started_at]
    # A NULL start (not known) is after no forget: `forgotten_at > NULL` holds for no row.
    return [*row, int(ep.fence), key, run, key, run, key, session, ep.started_at, at]


async def record_forget(
    cur: Cursor,
    prefix: str,
    key: str,
    session_id: str | None,
    before: float | None,
    where: str,
    args: list[Any],
) -> None:
    """Record, in the forget's transaction, the runs whose episodes it deletes (`where` over
    `memory_episodes` selects them, with `args`) and the forget itself, in place of the
    earlier forgets it covers all of (so repeating one adds no row)."""
    forgotten, at = f"{prefix}memory_forgotten", now()
    await cur.execute(
        f"INSERT INTO {forgotten} (user_id, session_id, run_id, forgotten_at) SELECT user_id, "
        f"session_id, run_id, CAST(? AS double precision) FROM {prefix}memory_episodes "
        f"WHERE {where}",
        [at, *args],
    )
    covered, covered_args = "user_id = ? AND run_id IS NULL AND forgotten_at <= ?", [key, at]
    if session_id is not None:
        covered, covered_args = covered + " AND session_id = ?", [*covered_args, session_id]
    if before is not None:
        covered += " AND older_than IS NOT NULL AND older_than <= ?"
        covered_args.append(before)
    await cur.execute(f"DELETE FROM {forgotten} WHERE {covered}", covered_args)
    await cur.execute(
        f"INSERT INTO {forgotten} (user_id, session_id, run_id, older_than, forgotten_at) "
        "VALUES (?, ?, NULL, ?, ?)",
        [key, session_id, before, at],
    )

"""The journal's tables and statements, written once for SQLite and Postgres (`Dialect`).

Schema version 2 (docs/runtime.md, "Schema"): the rows of a run's transitions and effects
name their run by `runs.n` (an integer) instead of repeating the 32-character run id, a
snapshot is a column of its transition instead of a row of its own table, and the small
keyed tables of SQLite are `WITHOUT ROWID` (one b-tree each instead of a table and an
index). A version-1 journal is rewritten to version 2 when opened (`migrate_from_v1`).
"""

from __future__ import annotations

from dataclasses import dataclass

from loomgraph.protocols.runtime import FINAL_STATUSES

SCHEMA_VERSION = 2

RUN_COLUMNS = (
    "run_id, graph_name, graph_hash, user_id, session_id, status, reason, "
    "parent_run_id, parent_seq, deadline, created_at, updated_at, result, initial, v"
)
# What a runs row is read with: the columns a start writes, then the recovery counter.
RUN_READ = RUN_COLUMNS + ", recoveries"
# What a transition is written with; the run (`runs.n`) is looked up by the run id, which
# goes last (`transition_row`).
TRANSITION_WRITE = "seq, node, visit, patch, next_node, usage, at, v, snapshot"
# What a transition is read with: the run id first, then TRANSITION_WRITE.
TRANSITION_READ = "r.run_id, " + ", ".join(f"t.{c}" for c in TRANSITION_WRITE.split(", "))
# The same for effects (`effect_row`); reads add the crash mark.
EFFECT_WRITE = "key, kind, intent, outcome, status, attempts, v"
EFFECT_READ = "r.run_id, " + ", ".join(f"e.{c}" for c in EFFECT_WRITE.split(", ")) + ", e.recovered"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL of the two backends."""

    prefix: str  # table qualifier: "" or '"schema".'
    integer: str
    real: str
    json: str  # the type of JSON columns; values are always compact JSON text
    serial: str  # an auto-increasing primary key, for "in the order they began"
    now: str  # the database clock in epoch seconds, so leases never trust a client clock
    # Appended to the fencing check's read of a lease row: Postgres locks the row (FOR
    # SHARE) so a takeover waits for the fenced write's commit; SQLite writes one at a time.
    share_lock: str = ""
    # Appended to CREATE TABLE of small tables with a primary key: SQLite then keeps them
    # in one b-tree (no rowid table beside the key's index), one page less each. Not for
    # tables with large rows: a WITHOUT ROWID row over ~1 KB spills to an overflow page.
    without_rowid: str = ""


def ddl(d: Dialect) -> list[str]:
    """The statements creating the journal tables (idempotent)."""
    p, i, r, j, wr = d.prefix, d.integer, d.real, d.json, d.without_rowid
    return [
        f"CREATE TABLE IF NOT EXISTS {p}journal_meta (key TEXT PRIMARY KEY, "
        f"value TEXT NOT NULL){wr}",
        f"CREATE TABLE IF NOT EXISTS {p}runs (n {d.serial}, run_id TEXT NOT NULL UNIQUE, "
        f"graph_name TEXT NOT NULL, graph_hash TEXT NOT NULL, user_id TEXT, session_id TEXT, "
        f"status TEXT NOT NULL, reason TEXT NOT NULL, parent_run_id TEXT, parent_seq {i}, "
        f"deadline {r}, created_at {r} NOT NULL, updated_at {r} NOT NULL, result {j}, "
        f"initial {j}, v {i} NOT NULL, recoveries {i} NOT NULL DEFAULT 0)",
        f"CREATE INDEX IF NOT EXISTS runs_user ON {p}runs (user_id)",
        *_run_tables(d, "transitions", "effects"),
        f"CREATE TABLE IF NOT EXISTS {p}leases (run_id TEXT PRIMARY KEY REFERENCES "
        f"{p}runs (run_id), owner TEXT NOT NULL, acquired_at {r} NOT NULL, "
        f"expires_at {r} NOT NULL, token {i} NOT NULL DEFAULT 1){wr}",
        graphs_table(d),
        audit_outbox_table(d),
        f"INSERT INTO {p}journal_meta (key, value) VALUES ('schema_version', "
        f"'{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING",
    ]


def _run_tables(d: Dialect, transitions: str, effects: str) -> list[str]:
    """The tables of a run's transitions (with their snapshots) and effects, by name."""
    p, i, r, j = d.prefix, d.integer, d.real, d.json
    return [
        f"CREATE TABLE IF NOT EXISTS {p}{transitions} (run {i} NOT NULL REFERENCES "
        f"{p}runs (n), seq {i} NOT NULL, node TEXT NOT NULL, visit {i} NOT NULL, "
        f"patch {j} NOT NULL, next_node TEXT NOT NULL, usage {j} NOT NULL, at {r} NOT NULL, "
        f"v {i} NOT NULL, snapshot {j}, PRIMARY KEY (run, seq))",
        f"CREATE TABLE IF NOT EXISTS {p}{effects} (n {d.serial}, run {i} NOT NULL "
        f"REFERENCES {p}runs (n), key TEXT NOT NULL, kind TEXT NOT NULL, "
        f"intent {j} NOT NULL, outcome {j}, status TEXT NOT NULL, attempts {i} NOT NULL, "
        f"v {i} NOT NULL, recovered {i} NOT NULL DEFAULT 0, UNIQUE (run, key))",
    ]


# The partial index of the runs waiting for an approval (`waiting_runs_index`).
WAITING_RUNS_INDEX = "runs_awaiting_approval"


def waiting_runs_index(d: Dialect) -> str:
    """The index of the runs waiting for an approval, in row order: the few a fleet's
    workers and a server look through every few seconds for expired requests, without
    reading a large journal's every run. Postgres only: a SQLite journal, one process's,
    keeps its pages for its runs."""
    return (
        f"CREATE INDEX IF NOT EXISTS {WAITING_RUNS_INDEX} ON {d.prefix}runs (n) "
        "WHERE status = 'awaiting_approval'"
    )


def graphs_table(d: Dialect) -> str:
    """The table of the graphs runs started with, one row per hash (`runs.graph_hash`);
    journals made before it gain it when opened. WITHOUT ROWID in SQLite although a spec
    may pass 1 KB: that costs at most an overflow page per distinct graph, while the index
    a rowid table needs beside it costs a page in every journal."""
    return (
        f"CREATE TABLE IF NOT EXISTS {d.prefix}graphs (hash TEXT PRIMARY KEY, "
        f"name TEXT NOT NULL, spec {d.json} NOT NULL, v {d.integer} NOT NULL){d.without_rowid}"
    )


def audit_outbox_table(d: Dialect) -> str:
    """The table of the audit entries an outage of the audit log cut off a run, kept until
    its resume writes them (`runtime.audit_outbox`): by the run's `runs.n` and their order
    (`seq`), each entry as JSON text. Journals made before it gain it when opened. Empty
    but during an outage, so WITHOUT ROWID in SQLite (one page per journal, not two), although
    an entry with content may pass 1 KB and take an overflow page while it is kept."""
    p, i = d.prefix, d.integer
    return (
        f"CREATE TABLE IF NOT EXISTS {p}audit_outbox (run {i} NOT NULL REFERENCES {p}runs (n), "
        f"seq {i} NOT NULL, entry TEXT NOT NULL, v {i} NOT NULL, PRIMARY KEY (run, seq))"
        f"{d.without_rowid}"
    )


# Columns added to version-1 journals made before fencing and dead letters; a journal
# opened without them gains them (ALTER TABLE ... ADD COLUMN) before it is migrated.
ADDED_COLUMNS = (
    ("runs", "recoveries", "NOT NULL DEFAULT 0"),
    ("leases", "token", "NOT NULL DEFAULT 1"),
    ("effects", "recovered", "NOT NULL DEFAULT 0"),
)


def migrate_from_v1(d: Dialect) -> list[str]:
    """The statements that rewrite a version-1 journal (with ADDED_COLUMNS and graphs) as
    version 2, to run in one transaction: transitions and effects are copied into new
    tables (effects in their begin order, which is all `n` means), snapshots become
    their transition's column, effect keys lose their run-id prefix (`stored_key`)."""
    p = d.prefix
    run_ids = f"JOIN {p}runs r ON r.run_id = old.run_id"
    # Rows are re-marked v + 1: a version-1 row becomes 2; any other value stays unreadable.
    key = (
        "CASE WHEN substr(old.key, 1, length(r.run_id) + 1) = r.run_id || ':' "
        "THEN substr(old.key, length(r.run_id) + 1) ELSE '=' || old.key END"
    )
    return [
        *_run_tables(d, "transitions_v2", "effects_v2"),
        f"INSERT INTO {p}transitions_v2 (run, {TRANSITION_WRITE}) SELECT r.n, old.seq, "
        "old.node, old.visit, old.patch, old.next_node, old.usage, old.at, old.v + 1, "
        f"s.state FROM {p}transitions old {run_ids} LEFT JOIN {p}snapshots s "
        "ON s.run_id = old.run_id AND s.seq = old.seq",
        f"INSERT INTO {p}effects_v2 (run, {EFFECT_WRITE}, recovered) SELECT r.n, {key}, "
        "old.kind, old.intent, old.outcome, old.status, old.attempts, old.v + 1, "
        f"old.recovered FROM {p}effects old {run_ids} ORDER BY old.n",
        f"DROP TABLE {p}snapshots",
        f"DROP TABLE {p}transitions",
        f"DROP TABLE {p}effects",
        f"ALTER TABLE {p}transitions_v2 RENAME TO transitions",
        f"ALTER TABLE {p}effects_v2 RENAME TO effects",
        f"UPDATE {p}runs SET v = v + 1",
        f"UPDATE {p}graphs SET v = v + 1",
        f"UPDATE {p}journal_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
    ]


def v1_orphans(d: Dialect) -> str:
    """How many rows of a version-1 journal `migrate_from_v1` could not carry over (a
    transition or effect of no run, a snapshot of no transition): foreign keys make them
    impossible, but a file edited without them must be refused, not shortened."""
    p = d.prefix
    return (
        f"SELECT (SELECT count(*) FROM {p}transitions t WHERE NOT EXISTS (SELECT 1 FROM "
        f"{p}runs r WHERE r.run_id = t.run_id)) + (SELECT count(*) FROM {p}effects e WHERE "
        f"NOT EXISTS (SELECT 1 FROM {p}runs r WHERE r.run_id = e.run_id)) + (SELECT count(*) "
        f"FROM {p}snapshots s WHERE NOT EXISTS (SELECT 1 FROM {p}transitions t WHERE "
        "t.run_id = s.run_id AND t.seq = s.seq))"
    )


# The statement that lists runs, by (one user's?, in one status?).
RUNS_BY = {
    (False, False): "runs",
    (True, False): "user_runs",
    (False, True): "status_runs",
    (True, True): "user_status_runs",
}


def statements(d: Dialect) -> dict[str, str]:
    """Every statement the journal runs, with `?` placeholders, formatted once per journal."""
    p, now = d.prefix, d.now
    updated = [c.strip() for c in RUN_COLUMNS.split(",")][1:]
    # True when the writer's fencing token is the run's current one (the run id, the token).
    fence = f"EXISTS (SELECT 1 FROM {p}leases WHERE run_id = ? AND token = ?{d.share_lock})"
    # The run's number, from its id: rows of transitions and effects are keyed by it.
    run_n = f"(SELECT n FROM {p}runs WHERE run_id = ?)"
    final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
    # An INSERT ... SELECT from the run's row writes nothing for an unknown run.
    transition = (
        f"INSERT INTO {p}transitions (run, {TRANSITION_WRITE}) SELECT r.n, {_marks(9)} "
        f"FROM {p}runs r WHERE r.run_id = ?"
    )
    effect = (
        f"INSERT INTO {p}effects (run, {EFFECT_WRITE}) SELECT r.n, {_marks(7)} "
        f"FROM {p}runs r WHERE r.run_id = ?"
    )
    effect_conflict = " ON CONFLICT (run, key) DO NOTHING"
    finish = (
        f"UPDATE {p}runs SET status = ?, reason = ?, result = ?, updated_at = ? "
        f"WHERE run_id = ? AND status NOT IN ({final})"
    )
    end = f"UPDATE {p}effects SET outcome = ?, status = ? WHERE run = {run_n} AND key = ?"
    recovery = f"UPDATE {p}runs SET recoveries = recoveries + 1 WHERE run_id = ?"
    reset = f"UPDATE {p}runs SET recoveries = 0 WHERE run_id = ?"
    move = f"UPDATE {p}runs SET graph_name = ?, graph_hash = ? WHERE run_id = ?"
    start_queued = (
        f"UPDATE {p}runs SET "
        + ", ".join(f"{c} = ?" for c in updated)
        + " WHERE run_id = ? AND status = 'queued'"
    )
    effects = f"SELECT {EFFECT_READ} FROM {p}effects e JOIN {p}runs r ON r.n = e.run "
    # The audit outbox: one entry kept after the run's others, numbered on from them (no row
    # for an unknown run), in one statement; the kept entries in order; the `?` oldest let go
    # of (fenced: with the fence's condition in the same statement).
    outbox_add = (
        f"INSERT INTO {p}audit_outbox (run, seq, entry, v) SELECT r.n, coalesce((SELECT "
        f"max(o.seq) FROM {p}audit_outbox o WHERE o.run = r.n), 0) + 1, ?, ? FROM {p}runs r "
        "WHERE r.run_id = ?"
    )
    outbox_drop = (
        f"DELETE FROM {p}audit_outbox WHERE run = {run_n} AND seq < (SELECT min(seq) FROM "
        f"{p}audit_outbox WHERE run = {run_n}) + ?"
    )
    return {
        "start_run": f"INSERT INTO {p}runs ({RUN_COLUMNS}) VALUES ({_marks(15)}) "
        "ON CONFLICT (run_id) DO NOTHING",
        "start_queued": start_queued,
        "start_queued_fenced": f"{start_queued} AND {fence}",
        "load_run": f"SELECT {RUN_READ} FROM {p}runs WHERE run_id = ?",
        "runs": f"SELECT {RUN_READ} FROM {p}runs ORDER BY n",
        "user_runs": f"SELECT {RUN_READ} FROM {p}runs WHERE user_id = ? ORDER BY n",
        "status_runs": f"SELECT {RUN_READ} FROM {p}runs WHERE status = ? ORDER BY n",
        "user_status_runs": f"SELECT {RUN_READ} FROM {p}runs WHERE user_id = ? AND status = ? "
        "ORDER BY n",
        "run_exists": f"SELECT 1 FROM {p}runs WHERE run_id = ?",
        "run_status": f"SELECT status FROM {p}runs WHERE run_id = ?",
        "finish_run": finish,
        "finish_run_fenced": f"{finish} AND {fence}",
        "add_transition": transition,
        "add_transition_fenced": f"{transition} AND {fence}",
        # A run's transitions start at seq 1: after 0 is all of them.
        "transitions_after": f"SELECT {TRANSITION_READ} FROM {p}transitions t JOIN {p}runs r "
        "ON r.n = t.run WHERE r.run_id = ? AND t.seq > ? ORDER BY t.seq",
        "latest_snapshot": f"SELECT seq, snapshot, v FROM {p}transitions WHERE run = {run_n} "
        "AND seq <= ? AND snapshot IS NOT NULL ORDER BY seq DESC LIMIT 1",
        "add_effect": effect + effect_conflict,
        "add_effect_fenced": f"{effect} AND {fence}{effect_conflict}",
        "retry_effect": f"UPDATE {p}effects SET status = 'unknown_after_crash', "
        f"attempts = attempts + 1, recovered = 1 WHERE run = {run_n} AND key = ? "
        "AND status <> 'done'",
        "load_effect": f"{effects}WHERE r.run_id = ? AND e.key = ?",
        "end_effect": end,
        "end_effect_fenced": f"{end} AND {fence}",
        "effects": f"{effects}WHERE r.run_id = ? ORDER BY e.n",
        "fence": f"SELECT 1 WHERE {fence}",
        "recovery": recovery,
        "recovery_fenced": f"{recovery} AND {fence}",
        "put_graph": f"INSERT INTO {p}graphs (hash, name, spec, v) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (hash) DO NOTHING",
        "graph": f"SELECT hash, name, spec, v FROM {p}graphs WHERE hash = ?",
        "move_run": move,
        "move_run_fenced": f"{move} AND {fence}",
        "reset_recoveries": reset,
        "reset_recoveries_fenced": f"{reset} AND {fence}",
        # A new owner takes a free, expired or (take_from) dead owner's lease with the next
        # token; the owner itself extends its lease and keeps its token.
        "take_lease": f"INSERT INTO {p}leases AS cur (run_id, owner, acquired_at, expires_at, "
        f"token) VALUES (?, ?, {now}, {now} + ?, 1) ON CONFLICT (run_id) DO UPDATE SET "
        "owner = excluded.owner, acquired_at = excluded.acquired_at, "
        "expires_at = excluded.expires_at, token = CASE WHEN cur.owner = excluded.owner "
        "THEN cur.token ELSE cur.token + 1 END WHERE cur.owner = excluded.owner "
        f"OR cur.expires_at <= {now} OR cur.owner = ?",
        "renew_lease": f"UPDATE {p}leases SET expires_at = {now} + ? "
        "WHERE run_id = ? AND owner = ?",
        # The row (and its token) stays, so the next holder's token is still a larger one.
        "release_lease": f"UPDATE {p}leases SET owner = '', expires_at = {now} "
        "WHERE run_id = ? AND owner = ? AND owner <> ''",
        "lease": f"SELECT owner, expires_at, {now}, token FROM {p}leases WHERE run_id = ?",
        "outbox_add": outbox_add,
        "outbox_read": f"SELECT o.entry, o.v FROM {p}audit_outbox o JOIN {p}runs r "
        "ON r.n = o.run WHERE r.run_id = ? ORDER BY o.seq",
        "outbox_drop": outbox_drop,
        "outbox_drop_fenced": f"{outbox_drop} AND {fence}",
    }


def _marks(n: int) -> str:
    return ", ".join("?" * n)

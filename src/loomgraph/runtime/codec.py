"""What the SQLite and Postgres journals share: versioned JSON encoding, rows and the SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    PinnedGraph,
    RunRecord,
    RunStart,
    RunStatus,
    Transition,
    Usage,
)
from loomgraph.protocols.runtime import FINAL_STATUSES, Lease
from loomgraph.runtime.errors import (
    JournalEncodingError,
    JournalVersionError,
)

SCHEMA_VERSION = 1
T = TypeVar("T")
# Far beyond any seq, so "the latest snapshot" and "at or before seq" share one statement.

# --------------------------------------------------------------------------- JSON


def dumps(value: Any, what: str) -> str:
    """Compact JSON text of a journaled value, or JournalEncodingError naming `what`."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise JournalEncodingError(f"{what} is not plain JSON: {err}") from None
    if text.isascii():  # the common case: nothing to check
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be stored as UTF-8 text; \u escapes can.
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def loads(text: str | None) -> Any:
    """The value of a JSON column (None for SQL NULL)."""
    return None if text is None else json.loads(text)


def check_version(v: int | None, where: str) -> None:
    """Refuse a row written by a newer schema than this code reads."""
    if v is not None and v != SCHEMA_VERSION:
        raise JournalVersionError(where, v, SCHEMA_VERSION)


# --------------------------------------------------------------------------- rows

RUN_COLUMNS = (
    "run_id, graph_name, graph_hash, user_id, session_id, status, reason, "
    "parent_run_id, parent_seq, deadline, created_at, updated_at, result, initial, v"
)
# What a runs row is read with: the columns a start writes, then the recovery counter.
RUN_READ = RUN_COLUMNS + ", recoveries"
TRANSITION_COLUMNS = "run_id, seq, node, visit, patch, next_node, usage, at, v"
EFFECT_COLUMNS = "run_id, key, kind, intent, outcome, status, attempts, v"
# What an effects row is read with: the columns a begin writes, then the crash mark.
EFFECT_READ = EFFECT_COLUMNS + ", recovered"


def run_row(run: RunRecord, now: float) -> tuple[Any, ...]:
    """The runs row of a new run; created_at defaults to now, updated_at is now."""
    where = f"run {run.run_id!r}"
    return (
        run.run_id,
        run.graph_name,
        run.graph_hash,
        run.user_id,
        run.session_id,
        str(run.status),
        run.reason,
        run.parent_run_id,
        run.parent_seq,
        run.deadline,
        run.created_at or now,
        now,
        None if run.result is None else dumps(run.result, f"{where}: result"),
        None if run.initial is None else dumps(run.initial.to_dict(), f"{where}: initial"),
        SCHEMA_VERSION,
    )


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A RunRecord from a row selected with RUN_COLUMNS."""
    check_version(row[14], f"row of run {row[0]!r}")
    return RunRecord(
        run_id=row[0],
        graph_name=row[1],
        graph_hash=row[2],
        user_id=row[3],
        session_id=row[4],
        status=RunStatus(row[5]),
        reason=row[6],
        parent_run_id=row[7],
        parent_seq=row[8],
        deadline=row[9],
        created_at=row[10],
        updated_at=row[11],
        result=loads(row[12]),
        initial=_run_start(loads(row[13])),
        recoveries=int(row[15]) if len(row) > 15 else 0,
    )


def transition_row(t: Transition) -> tuple[Any, ...]:
    """The transitions row of a transition (its snapshot goes to its own table)."""
    where = f"run {t.run_id!r} transition {t.seq}"
    return (
        t.run_id,
        t.seq,
        t.node,
        t.visit,
        dumps(t.patch, f"{where}: patch"),
        t.next_node,
        dumps(t.usage.to_dict(), f"{where}: usage"),
        t.at,
        SCHEMA_VERSION,
    )


def transition_from_row(row: Sequence[Any]) -> Transition:
    """A Transition from TRANSITION_COLUMNS followed by the snapshot's state and v (or NULLs)."""
    where = f"transition {row[1]} of run {row[0]!r}"
    check_version(row[8], where)
    check_version(row[10], f"snapshot of {where}")
    return Transition(
        run_id=row[0],
        seq=row[1],
        node=row[2],
        visit=row[3],
        patch=loads(row[4]),
        next_node=row[5],
        usage=Usage.from_dict(loads(row[6]), trusted=True),
        at=row[7],
        snapshot=loads(row[9]),
    )


def snapshot_from_row(run_id: str, row: Sequence[Any]) -> tuple[int, dict[str, Any]]:
    """A stored snapshot (seq, state, v) of `run_id` as (seq, state)."""
    check_version(row[2], f"snapshot {row[0]} of run {run_id!r}")
    return int(row[0]), loads(row[1])


def effect_row(e: EffectRecord) -> tuple[Any, ...]:
    """The effects row of a newly begun effect."""
    where = f"run {e.run_id!r} effect {e.key!r}"
    return (
        e.run_id,
        e.key,
        e.kind,
        dumps(e.intent, f"{where}: intent"),
        None if e.outcome is None else dumps(e.outcome, f"{where}: outcome"),
        str(e.status),
        e.attempts,
        SCHEMA_VERSION,
    )


def graph_from_row(row: Sequence[Any]) -> PinnedGraph:
    """A PinnedGraph from a graphs row (hash, name, spec, v)."""
    check_version(row[3], f"graph {row[0]!r}")
    spec = loads(row[2])
    if not isinstance(spec, dict):
        raise ValueError(f"graph {row[0]!r}: the spec is not a mapping")
    return PinnedGraph(row[0], row[1], spec)


def effect_from_row(row: Sequence[Any]) -> EffectRecord:
    """An EffectRecord from a row selected with EFFECT_COLUMNS."""
    check_version(row[7], f"row of effect {row[1]!r} of run {row[0]!r}")
    return EffectRecord(
        run_id=row[0],
        key=row[1],
        kind=row[2],
        intent=loads(row[3]),
        outcome=loads(row[4]),
        status=EffectStatus(row[5]),
        attempts=row[6],
        recovered=bool(row[8]) if len(row) > 8 else False,
    )


__all__ = ["Lease"]  # re-exported: it lives in the protocols, where the agent sees it

# --------------------------------------------------------------------------- SQL


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


def ddl(d: Dialect) -> list[str]:
    """The statements creating the journal tables (idempotent)."""
    p, i, r, j = d.prefix, d.integer, d.real, d.json
    return [
        f"CREATE TABLE IF NOT EXISTS {p}journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {p}runs (n {d.serial}, run_id TEXT NOT NULL UNIQUE, "
        f"graph_name TEXT NOT NULL, graph_hash TEXT NOT NULL, user_id TEXT, session_id TEXT, "
        f"status TEXT NOT NULL, reason TEXT NOT NULL, parent_run_id TEXT, parent_seq {i}, "
        f"deadline {r}, created_at {r} NOT NULL, updated_at {r} NOT NULL, result {j}, "
        f"initial {j}, v {i} NOT NULL, recoveries {i} NOT NULL DEFAULT 0)",
        f"CREATE INDEX IF NOT EXISTS runs_user ON {p}runs (user_id)",
        f"CREATE TABLE IF NOT EXISTS {p}transitions (run_id TEXT NOT NULL REFERENCES "
        f"{p}runs (run_id), seq {i} NOT NULL, node TEXT NOT NULL, visit {i} NOT NULL, "
        f"patch {j} NOT NULL, next_node TEXT NOT NULL, usage {j} NOT NULL, at {r} NOT NULL, "
        f"v {i} NOT NULL, PRIMARY KEY (run_id, seq))",
        f"CREATE TABLE IF NOT EXISTS {p}snapshots (run_id TEXT NOT NULL REFERENCES "
        f"{p}runs (run_id), seq {i} NOT NULL, state {j} NOT NULL, v {i} NOT NULL, "
        f"PRIMARY KEY (run_id, seq))",
        f"CREATE TABLE IF NOT EXISTS {p}effects (n {d.serial}, run_id TEXT NOT NULL "
        f"REFERENCES {p}runs (run_id), key TEXT NOT NULL, kind TEXT NOT NULL, "
        f"intent {j} NOT NULL, outcome {j}, status TEXT NOT NULL, attempts {i} NOT NULL, "
        f"v {i} NOT NULL, recovered {i} NOT NULL DEFAULT 0, UNIQUE (run_id, key))",
        f"CREATE TABLE IF NOT EXISTS {p}leases (run_id TEXT PRIMARY KEY REFERENCES "
        f"{p}runs (run_id), owner TEXT NOT NULL, acquired_at {r} NOT NULL, "
        f"expires_at {r} NOT NULL, token {i} NOT NULL DEFAULT 1)",
        graphs_table(d),
        f"INSERT INTO {p}journal_meta (key, value) VALUES ('schema_version', "
        f"'{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING",
    ]


def graphs_table(d: Dialect) -> str:
    """The table of the graphs runs started with, one row per hash (`runs.graph_hash`);
    journals made before it gain it when opened."""
    return (
        f"CREATE TABLE IF NOT EXISTS {d.prefix}graphs (hash TEXT PRIMARY KEY, "
        f"name TEXT NOT NULL, spec {d.json} NOT NULL, v {d.integer} NOT NULL)"
    )


# Columns added to version-1 journals made before fencing and dead letters; a journal
# opened without them gains them (ALTER TABLE ... ADD COLUMN), its version unchanged.
ADDED_COLUMNS = (
    ("runs", "recoveries", "NOT NULL DEFAULT 0"),
    ("leases", "token", "NOT NULL DEFAULT 1"),
    ("effects", "recovered", "NOT NULL DEFAULT 0"),
)


def statements(d: Dialect) -> dict[str, str]:
    """Every statement the journal runs, with `?` placeholders, formatted once per journal."""
    p, now = d.prefix, d.now
    updated = [c.strip() for c in RUN_COLUMNS.split(",")][1:]
    # True when the writer's fencing token is the run's current one (the run id, the token).
    fence = f"EXISTS (SELECT 1 FROM {p}leases WHERE run_id = ? AND token = ?{d.share_lock})"
    final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
    transition = f"INSERT INTO {p}transitions ({TRANSITION_COLUMNS}) "
    effect = f"INSERT INTO {p}effects ({EFFECT_COLUMNS}) "
    finish = (
        f"UPDATE {p}runs SET status = ?, reason = ?, result = ?, updated_at = ? "
        f"WHERE run_id = ? AND status NOT IN ({final})"
    )
    end = f"UPDATE {p}effects SET outcome = ?, status = ? WHERE run_id = ? AND key = ?"
    recovery = f"UPDATE {p}runs SET recoveries = recoveries + 1 WHERE run_id = ?"
    reset = f"UPDATE {p}runs SET recoveries = 0 WHERE run_id = ?"
    move = f"UPDATE {p}runs SET graph_name = ?, graph_hash = ? WHERE run_id = ?"
    start_queued = (
        f"UPDATE {p}runs SET "
        + ", ".join(f"{c} = ?" for c in updated)
        + " WHERE run_id = ? AND status = 'queued'"
    )
    return {
        "start_run": f"INSERT INTO {p}runs ({RUN_COLUMNS}) VALUES ({_marks(15)}) "
        "ON CONFLICT (run_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updated),
        "start_queued": start_queued,
        "start_queued_fenced": f"{start_queued} AND {fence}",
        "load_run": f"SELECT {RUN_READ} FROM {p}runs WHERE run_id = ?",
        "runs": f"SELECT {RUN_READ} FROM {p}runs ORDER BY n",
        "user_runs": f"SELECT {RUN_READ} FROM {p}runs WHERE user_id = ? ORDER BY n",
        "run_exists": f"SELECT 1 FROM {p}runs WHERE run_id = ?",
        "run_status": f"SELECT status FROM {p}runs WHERE run_id = ?",
        "finish_run": finish,
        "finish_run_fenced": f"{finish} AND {fence}",
        "add_transition": f"{transition}VALUES ({_marks(9)})",
        "add_transition_fenced": f"{transition}SELECT {_marks(9)} WHERE {fence}",
        "add_snapshot": f"INSERT INTO {p}snapshots (run_id, seq, state, v) VALUES (?, ?, ?, ?)",
        "transitions": "SELECT "
        + ", ".join(f"t.{c.strip()}" for c in TRANSITION_COLUMNS.split(","))
        + f", s.state, s.v FROM {p}transitions t LEFT JOIN {p}snapshots s "
        "ON s.run_id = t.run_id AND s.seq = t.seq WHERE t.run_id = ? "
        "ORDER BY t.seq",
        "latest_snapshot": f"SELECT seq, state, v FROM {p}snapshots WHERE run_id = ? AND "
        "seq <= ? ORDER BY seq DESC LIMIT 1",
        "add_effect": f"{effect}VALUES ({_marks(8)}) ON CONFLICT (run_id, key) DO NOTHING",
        "add_effect_fenced": f"{effect}SELECT {_marks(8)} WHERE {fence} "
        "ON CONFLICT (run_id, key) DO NOTHING",
        "retry_effect": f"UPDATE {p}effects SET status = 'unknown_after_crash', "
        "attempts = attempts + 1, recovered = 1 WHERE run_id = ? AND key = ? "
        "AND status <> 'done'",
        "load_effect": f"SELECT {EFFECT_READ} FROM {p}effects WHERE run_id = ? AND key = ?",
        "end_effect": end,
        "end_effect_fenced": f"{end} AND {fence}",
        "effects": f"SELECT {EFFECT_READ} FROM {p}effects WHERE run_id = ? ORDER BY n",
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
    }


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# --------------------------------------------------------------------------- the journal


def _run_start(data: Any) -> RunStart | None:
    return None if data is None else RunStart.from_dict(data)

"""What the SQLite and Postgres journals share: JSON encoding, rows, SQL and the Runtime logic.

Each backend only supplies a connection and two context managers (`_read`, `_write`) that
hand out a `Cursor` and translate driver errors; every Runtime method is written once here,
so the two backends cannot drift apart in semantics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar, cast

from loomgraph.protocols import EffectRecord, EffectStatus, RunRecord, RunStatus, Transition, Usage
from loomgraph.runtime.errors import (
    JournalCorrupted,
    JournalEncodingError,
    JournalVersionError,
    RunConflict,
    UnknownEffect,
    UnknownRun,
)

SCHEMA_VERSION = 1
T = TypeVar("T")
# Far beyond any seq, so "the latest snapshot" and "at or before seq" share one statement.
_MAX_SEQ = 2**62

# --------------------------------------------------------------------------- JSON


def dumps(value: Any, what: str) -> str:
    """Compact JSON text of a journaled value, or JournalEncodingError naming `what`."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise JournalEncodingError(f"{what} is not plain JSON: {err}") from None
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

RUN_COLUMNS = ("run_id, graph_name, graph_hash, user_id, session_id, status, reason, "
               "parent_run_id, parent_seq, deadline, created_at, updated_at, result, initial, v")
TRANSITION_COLUMNS = "run_id, seq, node, visit, patch, next_node, usage, at, v"
EFFECT_COLUMNS = "run_id, key, kind, intent, outcome, status, attempts, v"


def run_row(run: RunRecord, now: float) -> tuple[Any, ...]:
    """The runs row of a new run; created_at defaults to now, updated_at is now."""
    where = f"run {run.run_id!r}"
    return (run.run_id, run.graph_name, run.graph_hash, run.user_id, run.session_id,
            run.status, run.reason, run.parent_run_id, run.parent_seq, run.deadline,
            run.created_at or now, now,
            None if run.result is None else dumps(run.result, f"{where}: result"),
            None if run.initial is None else dumps(run.initial, f"{where}: initial"),
            SCHEMA_VERSION)


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A RunRecord from a row selected with RUN_COLUMNS."""
    check_version(row[14], f"row of run {row[0]!r}")
    return RunRecord(
        run_id=row[0], graph_name=row[1], graph_hash=row[2], user_id=row[3],
        session_id=row[4], status=cast(RunStatus, row[5]), reason=row[6],
        parent_run_id=row[7], parent_seq=row[8], deadline=row[9], created_at=row[10],
        updated_at=row[11], result=loads(row[12]), initial=loads(row[13]))


def transition_row(t: Transition) -> tuple[Any, ...]:
    """The transitions row of a transition (its snapshot goes to its own table)."""
    where = f"run {t.run_id!r} transition {t.seq}"
    return (t.run_id, t.seq, t.node, t.visit, dumps(t.patch, f"{where}: patch"), t.next_node,
            dumps(t.usage, f"{where}: usage"), t.at, SCHEMA_VERSION)


def transition_from_row(row: Sequence[Any]) -> Transition:
    """A Transition from TRANSITION_COLUMNS followed by the snapshot's state and v (or NULLs)."""
    where = f"transition {row[1]} of run {row[0]!r}"
    check_version(row[8], where)
    check_version(row[10], f"snapshot of {where}")
    return Transition(
        run_id=row[0], seq=row[1], node=row[2], visit=row[3], patch=loads(row[4]),
        next_node=row[5], usage=cast(Usage, loads(row[6])), at=row[7], snapshot=loads(row[9]))


def effect_row(e: EffectRecord) -> tuple[Any, ...]:
    """The effects row of a newly begun effect."""
    where = f"run {e.run_id!r} effect {e.key!r}"
    return (e.run_id, e.key, e.kind, dumps(e.intent, f"{where}: intent"),
            None if e.outcome is None else dumps(e.outcome, f"{where}: outcome"),
            e.status, e.attempts, SCHEMA_VERSION)


def effect_from_row(row: Sequence[Any]) -> EffectRecord:
    """An EffectRecord from a row selected with EFFECT_COLUMNS."""
    check_version(row[7], f"row of effect {row[1]!r} of run {row[0]!r}")
    return EffectRecord(run_id=row[0], key=row[1], kind=row[2], intent=loads(row[3]),
                        outcome=loads(row[4]), status=cast(EffectStatus, row[5]),
                        attempts=row[6])


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may advance a run, until when (seconds since the epoch, database clock)."""

    run_id: str
    owner: str
    expires_at: float


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


def ddl(d: Dialect) -> list[str]:
    """The statements creating the journal tables (idempotent)."""
    p, i, r, j = d.prefix, d.integer, d.real, d.json
    return [
        f"CREATE TABLE IF NOT EXISTS {p}journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {p}runs (n {d.serial}, run_id TEXT NOT NULL UNIQUE, "
        f"graph_name TEXT NOT NULL, graph_hash TEXT NOT NULL, user_id TEXT, session_id TEXT, "
        f"status TEXT NOT NULL, reason TEXT NOT NULL, parent_run_id TEXT, parent_seq {i}, "
        f"deadline {r}, created_at {r} NOT NULL, updated_at {r} NOT NULL, result {j}, "
        f"initial {j}, v {i} NOT NULL)",
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
        f"v {i} NOT NULL, UNIQUE (run_id, key))",
        f"CREATE TABLE IF NOT EXISTS {p}leases (run_id TEXT PRIMARY KEY REFERENCES "
        f"{p}runs (run_id), owner TEXT NOT NULL, acquired_at {r} NOT NULL, "
        f"expires_at {r} NOT NULL)",
        f"INSERT INTO {p}journal_meta (key, value) VALUES ('schema_version', "
        f"'{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING",
    ]


def statements(d: Dialect) -> dict[str, str]:
    """Every statement the journal runs, with `?` placeholders, formatted once per journal."""
    p, now = d.prefix, d.now
    updated = [c.strip() for c in RUN_COLUMNS.split(",")][1:]
    return {
        "start_run": f"INSERT INTO {p}runs ({RUN_COLUMNS}) VALUES ({_marks(15)}) "
                     "ON CONFLICT (run_id) DO UPDATE SET "
                     + ", ".join(f"{c} = excluded.{c}" for c in updated),
        "load_run": f"SELECT {RUN_COLUMNS} FROM {p}runs WHERE run_id = ?",
        "runs": f"SELECT {RUN_COLUMNS} FROM {p}runs ORDER BY n",
        "user_runs": f"SELECT {RUN_COLUMNS} FROM {p}runs WHERE user_id = ? ORDER BY n",
        "run_exists": f"SELECT 1 FROM {p}runs WHERE run_id = ?",
        "finish_run": f"UPDATE {p}runs SET status = ?, reason = ?, result = ?, updated_at = ? "
                      "WHERE run_id = ?",
        "add_transition": f"INSERT INTO {p}transitions ({TRANSITION_COLUMNS}) "
                          f"VALUES ({_marks(9)})",
        "add_snapshot": f"INSERT INTO {p}snapshots (run_id, seq, state, v) VALUES (?, ?, ?, ?)",
        "transitions": "SELECT " + ", ".join(f"t.{c.strip()}" for c in
                                             TRANSITION_COLUMNS.split(","))
                       + f", s.state, s.v FROM {p}transitions t LEFT JOIN {p}snapshots s "
                       "ON s.run_id = t.run_id AND s.seq = t.seq WHERE t.run_id = ? "
                       "ORDER BY t.seq",
        "latest_snapshot": f"SELECT seq, state, v FROM {p}snapshots WHERE run_id = ? AND "
                           "seq <= ? ORDER BY seq DESC LIMIT 1",
        "add_effect": f"INSERT INTO {p}effects ({EFFECT_COLUMNS}) VALUES ({_marks(8)}) "
                      "ON CONFLICT (run_id, key) DO NOTHING",
        "retry_effect": f"UPDATE {p}effects SET status = 'unknown_after_crash', "
                        "attempts = attempts + 1 WHERE run_id = ? AND key = ? "
                        "AND status <> 'done'",
        "load_effect": f"SELECT {EFFECT_COLUMNS} FROM {p}effects WHERE run_id = ? AND key = ?",
        "end_effect": f"UPDATE {p}effects SET outcome = ?, status = ? "
                      "WHERE run_id = ? AND key = ?",
        "effects": f"SELECT {EFFECT_COLUMNS} FROM {p}effects WHERE run_id = ? ORDER BY n",
        "take_lease": f"INSERT INTO {p}leases AS cur (run_id, owner, acquired_at, expires_at) "
                      f"VALUES (?, ?, {now}, {now} + ?) ON CONFLICT (run_id) DO UPDATE SET "
                      "owner = excluded.owner, acquired_at = excluded.acquired_at, "
                      "expires_at = excluded.expires_at WHERE cur.owner = excluded.owner "
                      f"OR cur.expires_at <= {now}",
        "renew_lease": f"UPDATE {p}leases SET expires_at = {now} + ? "
                       "WHERE run_id = ? AND owner = ?",
        "release_lease": f"DELETE FROM {p}leases WHERE run_id = ? AND owner = ?",
        "lease": f"SELECT owner, expires_at, {now} FROM {p}leases WHERE run_id = ?",
    }


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# --------------------------------------------------------------------------- the journal


class Cursor(Protocol):
    """What a backend hands the shared logic inside `_read()` / `_write()`."""

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """Run one query; its rows."""
        ...


class Constraint(Exception):
    """A backend's constraint violation, translated so the shared logic can name the run."""

    def __init__(self, kind: Literal["unique", "foreign_key"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class SqlJournal:
    """The Runtime protocol over SQL; subclasses provide connections and error translation.

    `_read()` gives a cursor outside any explicit transaction, where each statement commits
    on its own; `_write()` gives one inside a write transaction. A write of one statement
    goes through `_read()` (one round trip: the statement is its own transaction).
    """

    def __init__(
        self, dialect: Dialect, location: str, *, snapshot_every: int, lease_seconds: float
    ) -> None:
        if snapshot_every < 0 or lease_seconds <= 0:
            raise ValueError("snapshot_every must be >= 0 and lease_seconds > 0")
        self.location = location  # the file or server, as errors name it
        # How often the interpreter should attach a full-state snapshot to a transition
        # (0: never); the journal stores whatever snapshot a transition carries.
        self.snapshot_every = snapshot_every
        self.lease_seconds = lease_seconds
        self._sql = statements(dialect)

    async def connect(self) -> None:
        """Open (and when new, create) the journal now rather than on first use."""
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of connections; the next use opens them again."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _read(self) -> AbstractAsyncContextManager[Cursor]:
        raise NotImplementedError

    def _write(self) -> AbstractAsyncContextManager[Cursor]:
        raise NotImplementedError

    async def _exec(self, name: str, args: Sequence[Any]) -> int:
        async with self._read() as cur:
            return await cur.execute(self._sql[name], args)

    async def _fetch(self, name: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        async with self._read() as cur:
            return await cur.fetch(self._sql[name], args)

    def _decode(self, convert: Callable[[Sequence[Any]], T], rows: list[Sequence[Any]]) -> list[T]:
        """Rows as records; a row that is not what this journal writes is corruption."""
        try:
            return [convert(r) for r in rows]
        except (ValueError, TypeError, IndexError) as err:
            raise JournalCorrupted(self.location, f"unreadable row: {err}") from None

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run (a second start of the same id replaces its record, as in memory)."""
        await self._exec("start_run", run_row(run, time.time()))

    async def load_run(self, run_id: str) -> RunRecord | None:
        """A run's record, or None."""
        rows = await self._fetch("load_run", (run_id,))
        return self._decode(run_from_row, rows)[0] if rows else None

    async def append_transition(self, transition: Transition) -> None:
        """Append one transition (and its snapshot, if any); committed when this returns."""
        t = transition
        row = transition_row(t)
        try:
            if t.snapshot is None:
                await self._exec("add_transition", row)
                return
            snap = dumps(t.snapshot, f"run {t.run_id!r} transition {t.seq}: snapshot")
            async with self._write() as cur:
                await cur.execute(self._sql["add_transition"], row)
                await cur.execute(self._sql["add_snapshot"],
                                  (t.run_id, t.seq, snap, SCHEMA_VERSION))
        except Constraint as err:
            raise _named(err, t.run_id, f"transition seq {t.seq} is already recorded") from None

    async def transitions(self, run_id: str) -> list[Transition]:
        """Every transition of a run, in order, each with its snapshot if one was stored."""
        rows = await self._fetch("transitions", (run_id,))
        if not rows and not await self._fetch("run_exists", (run_id,)):
            raise UnknownRun(run_id)
        return self._decode(transition_from_row, rows)

    async def latest_snapshot(
        self, run_id: str, at_or_before: int | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """The (seq, state) of the newest snapshot at or before a seq, or None."""
        limit = _MAX_SEQ if at_or_before is None else at_or_before
        rows = await self._fetch("latest_snapshot", (run_id, limit))
        if rows:
            return self._decode(lambda r: _snapshot_from_row(run_id, r), rows)[0]
        if not await self._fetch("run_exists", (run_id,)):
            raise UnknownRun(run_id)
        return None

    async def begin_effect(self, effect: EffectRecord) -> EffectRecord | None:
        """Journal an intent; return the earlier record when this key was seen before.

        An earlier record that is not `done` becomes `unknown_after_crash` with one more
        attempt, in the same transaction as the read that returns it.
        """
        key = (effect.run_id, effect.key)
        try:
            # INSERT ... ON CONFLICT DO NOTHING is atomic on its own: the common case (a new
            # key) costs one statement; only a key seen before needs the transaction below.
            if await self._exec("add_effect", effect_row(effect)):
                return None
        except Constraint as err:
            raise _named(err, effect.run_id, f"effect {effect.key!r} conflicts") from None
        async with self._write() as cur:
            await cur.execute(self._sql["retry_effect"], key)
            rows = await cur.fetch(self._sql["load_effect"], key)
        return self._decode(effect_from_row, rows)[0]

    async def end_effect(
        self, run_id: str, key: str, outcome: dict[str, Any], status: EffectStatus
    ) -> None:
        """Journal the outcome of an effect."""
        text = dumps(outcome, f"run {run_id!r} effect {key!r}: outcome")
        if not await self._exec("end_effect", (text, status, run_id, key)):
            if not await self._fetch("run_exists", (run_id,)):
                raise UnknownRun(run_id)
            raise UnknownEffect(run_id, key)

    async def finish_run(
        self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
    ) -> None:
        """Record how a run ended."""
        text = None if result is None else dumps(result, f"run {run_id!r}: result")
        if not await self._exec("finish_run", (status, reason, text, time.time(), run_id)):
            raise UnknownRun(run_id)

    async def effects(self, run_id: str) -> list[EffectRecord]:
        """Every effect of a run, in the order they began ([] for an unknown run)."""
        return self._decode(effect_from_row, await self._fetch("effects", (run_id,)))

    async def runs(self, user_id: str | None = None) -> list[RunRecord]:
        """Runs in the order they were started, optionally of one user."""
        if user_id is None:
            rows = await self._fetch("runs", ())
        else:
            rows = await self._fetch("user_runs", (user_id,))
        return self._decode(run_from_row, rows)

    # ------------------------------------------------------------------ leases

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Lease:
        """Take (or extend) the lease on a run; RunConflict while another owner holds it."""
        ttl = float(self.lease_seconds if ttl is None else ttl)
        try:
            async with self._write() as cur:
                taken = await cur.execute(self._sql["take_lease"], (run_id, owner, ttl))
                holder, expires_at, now = (await cur.fetch(self._sql["lease"], (run_id,)))[0]
        except Constraint as err:
            raise _named(err, run_id, "lease conflict") from None
        if not taken:
            raise RunConflict(run_id, f"leased by {holder!r} for another "
                              f"{expires_at - now:.1f}s", owner=holder, expires_at=expires_at)
        return Lease(run_id, owner, expires_at)

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Lease:
        """Extend a lease this owner holds; RunConflict when it was lost to another owner."""
        ttl = float(self.lease_seconds if ttl is None else ttl)
        async with self._write() as cur:
            renewed = await cur.execute(self._sql["renew_lease"], (ttl, run_id, owner))
            rows = await cur.fetch(self._sql["lease"], (run_id,))
        if not renewed:
            holder = rows[0][0] if rows else None
            raise RunConflict(run_id, f"{owner!r} no longer holds the lease (holder: "
                              f"{holder!r})", owner=holder)
        return Lease(run_id, owner, rows[0][1])

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give a lease back; False when this owner did not hold it."""
        return bool(await self._exec("release_lease", (run_id, owner)))

    async def lease(self, run_id: str) -> Lease | None:
        """The current lease on a run, expired or not, or None."""
        rows = await self._fetch("lease", (run_id,))
        return Lease(run_id, rows[0][0], rows[0][1]) if rows else None


def _snapshot_from_row(run_id: str, row: Sequence[Any]) -> tuple[int, dict[str, Any]]:
    check_version(row[2], f"snapshot {row[0]} of run {run_id!r}")
    return int(row[0]), loads(row[1])


def _named(err: Constraint, run_id: str, unique_detail: str) -> Exception:
    if err.kind == "foreign_key":
        return UnknownRun(run_id)
    return RunConflict(run_id, unique_detail)

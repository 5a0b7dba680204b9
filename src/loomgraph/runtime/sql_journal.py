"""`SqlJournal`: the Runtime protocol written once over SQL, for SQLite and Postgres.

Each backend only supplies a connection and two context managers (`_read`, `_write`) that
hand out a `Cursor` and translate driver errors; every Runtime method is written once here
(leases and the fencing of writes in `sql_leases`, the audit outbox in `audit_outbox`, both
parts of `SqlJournal`), so the two backends cannot drift apart in semantics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self, TypeVar

from loomgraph._storage.cursor import Constraint, Cursor
from loomgraph.protocols import (
    AuditEntry,
    EffectRecord,
    EffectStatus,
    PinnedGraph,
    RunRecord,
    RunStatus,
    Transition,
)
from loomgraph.protocols.runtime import Lease
from loomgraph.runtime.audit_entries import entry_text
from loomgraph.runtime.audit_outbox import SqlAuditOutbox, ending, refused
from loomgraph.runtime.codec import (
    dumps,
    effect_from_row,
    effect_row,
    graph_from_row,
    run_from_row,
    run_row,
    snapshot_from_row,
    stored_key,
    transition_from_row,
    transition_row,
)
from loomgraph.runtime.errors import (
    JournalCorrupted,
    LeaseLost,
    RunConflict,
    RunExists,
    RunFinished,
    UnknownEffect,
    UnknownRun,
)
from loomgraph.runtime.schema import RUNS_BY, SCHEMA_VERSION, Dialect, statements
from loomgraph.runtime.sql_leases import SqlLeases, constraint_error
from loomgraph.runtime.text import check_id, storable, storable_reason

__all__ = ["Constraint", "Cursor", "SqlJournal"]

T = TypeVar("T")
_MAX_SEQ = 2**62


class SqlJournal(SqlLeases, SqlAuditOutbox):
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
        self._graphs_kept: set[str] = set()  # hashes this object stored or found stored

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
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _read(self) -> AbstractAsyncContextManager[Cursor]:
        raise NotImplementedError

    async def _refused(
        self, run_id: str, lease: Lease | None, cur: Cursor | None = None
    ) -> Exception:
        """Why a write to a run changed no row (`SqlLeases._refused`); a lost lease noted
        for the run's audit writer (`audit_outbox.refused`)."""
        err = await super()._refused(run_id, lease, cur)
        return refused(err) if isinstance(err, LeaseLost) else err

    def _write(self) -> AbstractAsyncContextManager[Cursor]:
        raise NotImplementedError

    async def _exec(self, name: str, args: Sequence[Any]) -> int:
        async with self._read() as cur:
            return await cur.execute(self._sql[name], args)

    async def _fetch(self, name: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        async with self._read() as cur:
            return await cur.fetch(self._sql[name], args)

    def _decode(self, convert: Callable[[Sequence[Any]], T], rows: list[Sequence[Any]]) -> list[T]:
        """Rows as records; a row that is not what this journal writes is corruption (the
        converters check each JSON column's shape: an object where one is stored)."""
        try:
            return [convert(r) for r in rows]
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
            raise JournalCorrupted(self.location, f"unreadable row: {err}") from None

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run; `RunExists` (nothing written) when the id is journaled already."""
        if not await self._exec("start_run", run_row(run, time.time())):
            raise RunExists(run.run_id)

    async def start_queued_run(self, run: RunRecord, *, fence: Lease | None = None) -> None:
        """Start a run journaled `queued` (a worker fleet's): its record is replaced only
        while it is still queued and, fenced, while the writer's lease is current. Otherwise
        nothing is written: `LeaseLost` (the lease was taken over: a worker that was stopped
        must not restart a run another one advanced, or finished), `RunConflict` (it started
        already) or `UnknownRun`."""
        row = run_row(run, time.time())
        lease = self._fence(run.run_id, fence)
        name, args = self._fenced("start_queued", (*row[1:], run.run_id), lease)
        if await self._exec(name, args):
            return
        rows = await self._fetch("run_status", (run.run_id,))
        if not rows:
            raise UnknownRun(run.run_id)
        if lease is not None and not await self._fetch("fence", (run.run_id, lease.token)):
            raise refused(LeaseLost(run.run_id, lease.token))
        raise RunConflict(run.run_id, f"the run is {rows[0][0]}, not queued")

    async def load_run(self, run_id: str) -> RunRecord | None:
        """A run's record, or None (also for an id no run can have: see `runtime.text`)."""
        if not storable(run_id):
            return None
        rows = await self._fetch("load_run", (run_id,))
        return self._decode(run_from_row, rows)[0] if rows else None

    async def put_graph(self, graph: PinnedGraph) -> None:
        """Keep a graph under its hash; a hash kept already is left as it is (rows are never
        removed, so each hash is written once per journal object)."""
        if graph.hash in self._graphs_kept:
            return
        check_id("graph_name", graph.name)
        check_id("graph_hash", graph.hash)
        spec = dumps(graph.spec, f"graph {graph.name!r} ({graph.hash})")
        await self._exec("put_graph", (graph.hash, graph.name, spec, SCHEMA_VERSION))
        self._graphs_kept.add(graph.hash)

    async def move_run(
        self, run_id: str, graph: PinnedGraph, *, fence: Lease | None = None
    ) -> None:
        """Pin a run to another graph (kept first); fenced."""
        await self.put_graph(graph)
        lease = self._fence(run_id, fence)
        args = (graph.name, graph.hash, run_id)
        if not await self._exec(*self._fenced("move_run", args, lease)):
            raise await self._refused(run_id, lease)

    async def graph(self, graph_hash: str) -> PinnedGraph | None:
        """The graph kept under a hash, or None."""
        rows = await self._fetch("graph", (graph_hash,))
        return self._decode(graph_from_row, rows)[0] if rows else None

    async def append_transition(
        self, transition: Transition, *, fence: Lease | None = None
    ) -> None:
        """Append one transition (and its snapshot, if any); committed when this returns.

        Fenced (see `_fence`): written only while the writer's token is current, else
        `LeaseLost` and nothing is written.
        """
        t = transition
        lease = self._fence(t.run_id, fence)
        # One statement, snapshot included: it commits whole or not at all.
        name, args = self._fenced("add_transition", transition_row(t), lease)
        try:
            if not await self._exec(name, args):
                raise await self._refused(t.run_id, lease)
        except Constraint as err:
            raise constraint_error(
                err, t.run_id, f"transition seq {t.seq} is already recorded"
            ) from None

    async def transitions(self, run_id: str) -> list[Transition]:
        """Every transition of a run, in order, each with its snapshot if one was stored."""
        return await self.transitions_after(run_id, 0)

    async def transitions_after(self, run_id: str, seq: int) -> list[Transition]:
        """The transitions of a run after `seq`, in order (one range read on the index:
        what a follower of the run has not seen yet)."""
        rows = await self._fetch("transitions_after", (run_id, seq))
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
            return self._decode(lambda r: snapshot_from_row(run_id, r), rows)[0]
        if not await self._fetch("run_exists", (run_id,)):
            raise UnknownRun(run_id)
        return None

    async def begin_effect(
        self, effect: EffectRecord, *, fence: Lease | None = None
    ) -> EffectRecord | None:
        """Journal an intent; return the earlier record when this key was seen before.

        An earlier record that is not `done` becomes `unknown_after_crash` with one more
        attempt, in the same transaction as the read that returns it. Fenced.
        """
        key = (effect.run_id, stored_key(effect.run_id, effect.key))
        lease = self._fence(effect.run_id, fence)
        try:
            # INSERT ... ON CONFLICT DO NOTHING is atomic on its own: the common case (a new
            # key) costs one statement; only a key seen before needs the transaction below.
            if await self._exec(*self._fenced("add_effect", effect_row(effect), lease)):
                return None
        except Constraint as err:
            raise constraint_error(err, effect.run_id, f"effect {effect.key!r} conflicts") from None
        async with self._write() as cur:
            if lease is not None and not await cur.fetch(
                self._sql["fence"], (lease.run_id, lease.token)
            ):
                raise await self._refused(effect.run_id, lease, cur)
            await cur.execute(self._sql["retry_effect"], key)
            rows = await cur.fetch(self._sql["load_effect"], key)
        if not rows:
            raise UnknownRun(effect.run_id)
        return self._decode(effect_from_row, rows)[0]

    async def end_effect(
        self,
        run_id: str,
        key: str,
        outcome: dict[str, Any],
        status: EffectStatus,
        *,
        fence: Lease | None = None,
    ) -> None:
        """Journal the outcome of an effect (fenced)."""
        name, args, lease = self._end_effect(run_id, key, outcome, status, fence)
        if not await self._exec(name, args):
            raise await self._not_ended(run_id, key, lease)

    async def end_effect_keeping(
        self,
        run_id: str,
        key: str,
        outcome: dict[str, Any],
        status: EffectStatus,
        entries: Sequence[AuditEntry],
        *,
        fence: Lease | None = None,
    ) -> None:
        """`end_effect` with audit entries of the run kept in its audit outbox, after those
        kept already, in the same transaction (an approval's use kept with the answer that
        records it: `engine.approvals`); fenced. A refused outcome keeps nothing."""
        name, args, lease = self._end_effect(run_id, key, outcome, status, fence)
        texts = [entry_text(entry) for entry in entries]
        async with self._write() as cur:
            if not await cur.execute(self._sql[name], args):
                raise await self._not_ended(run_id, key, lease, cur)
            await self._keep_in(cur, run_id, texts)

    def _end_effect(
        self,
        run_id: str,
        key: str,
        outcome: dict[str, Any],
        status: EffectStatus,
        fence: Lease | None,
    ) -> tuple[str, Sequence[Any], Lease | None]:
        """The fenced `end_effect` statement of an outcome, its arguments and the lease."""
        text = dumps(outcome, f"run {run_id!r} effect {key!r}: outcome")
        lease = self._fence(run_id, fence)
        row = (text, str(status), run_id, stored_key(run_id, key))
        return (*self._fenced("end_effect", row, lease), lease)

    async def _not_ended(
        self, run_id: str, key: str, lease: Lease | None, cur: Cursor | None = None
    ) -> Exception:
        """Why `end_effect` changed no row: an unknown run, a lost lease, or an effect never
        begun (read in the transaction of `cur`, when given)."""
        if not await self._fetch_in(cur, "run_exists", (run_id,)):
            return UnknownRun(run_id)
        if lease is not None and not await self._fetch_in(cur, "fence", (run_id, lease.token)):
            return refused(LeaseLost(run_id, lease.token))
        return UnknownEffect(run_id, key)

    async def _fetch_in(
        self, cur: Cursor | None, name: str, args: Sequence[Any]
    ) -> list[Sequence[Any]]:
        """`_fetch`, in the transaction of `cur` when given."""
        if cur is not None:
            return await cur.fetch(self._sql[name], args)
        return await self._fetch(name, args)

    async def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        reason: str,
        result: dict[str, Any] | None,
        *,
        fence: Lease | None = None,
    ) -> None:
        """Record how a run ended; a run already finished (a final status) keeps its status
        and result (`RunFinished`). Fenced. The audit entries the caller keeps with the end
        (`audit_outbox.end_entries`) are kept in the same transaction."""
        text = None if result is None else dumps(result, f"run {run_id!r}: result")
        lease = self._fence(run_id, fence)
        row = (str(status), storable_reason(reason), text, time.time(), run_id)
        name, args = self._fenced("finish_run", row, lease)
        end = ending(run_id, RunStatus(status))
        if end is None:  # one statement, its own transaction
            if not await self._exec(name, args):
                raise await self._not_finished(run_id, lease)
            return
        texts = [entry_text(entry) for entry in end.entries]
        async with self._write() as cur:
            if not await cur.execute(self._sql[name], args):
                raise await self._not_finished(run_id, lease, cur)
            await self._keep_in(cur, run_id, texts)
        end.kept = True

    async def _not_finished(
        self, run_id: str, lease: Lease | None, cur: Cursor | None = None
    ) -> Exception:
        """Why `finish_run` changed no row: an unknown run, a lost lease, or a run that
        ended already (read in the transaction of `cur`, when given)."""
        rows = await self._fetch_in(cur, "run_status", (run_id,))
        if not rows:
            return UnknownRun(run_id)
        if lease is not None and not await self._fetch_in(cur, "fence", (run_id, lease.token)):
            return refused(LeaseLost(run_id, lease.token))
        return RunFinished(run_id, rows[0][0])

    async def record_recovery(self, run_id: str, *, fence: Lease | None = None) -> int:
        """Count one more recovery (a resume after a crash or failure); the new count."""
        lease = self._fence(run_id, fence)
        if not await self._exec(*self._fenced("recovery", (run_id,), lease)):
            raise await self._refused(run_id, lease)
        record = await self.load_run(run_id)
        return 0 if record is None else record.recoveries

    async def reset_recoveries(self, run_id: str, *, fence: Lease | None = None) -> None:
        """Forget a run's failed recoveries (an operator's retry, or a recovery that reached a
        person); fenced like every write of a run's holder, so a zombie changes nothing."""
        lease = self._fence(run_id, fence)
        if not await self._exec(*self._fenced("reset_recoveries", (run_id,), lease)):
            raise await self._refused(run_id, lease)

    async def effects(self, run_id: str) -> list[EffectRecord]:
        """Every effect of a run, in the order they began ([] for an unknown run)."""
        return self._decode(effect_from_row, await self._fetch("effects", (run_id,)))

    async def effect(self, run_id: str, key: str) -> EffectRecord | None:
        """One effect of a run by its key, or None (one lookup on the (run_id, key) index)."""
        rows = await self._fetch("load_effect", (run_id, stored_key(run_id, key)))
        return self._decode(effect_from_row, rows)[0] if rows else None

    async def runs(
        self, user_id: str | None = None, *, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Runs in the order they were started, optionally of one user, in one status (both
        in the query)."""
        if user_id is not None and not storable(user_id):
            return []  # no run can have it: `start_run` refuses it
        args = [a for a in (user_id, status) if a is not None]
        name = RUNS_BY[user_id is not None, status is not None]
        return self._decode(run_from_row, await self._fetch(name, [str(a) for a in args]))

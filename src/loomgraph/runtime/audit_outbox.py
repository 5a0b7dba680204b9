"""The audit outbox of the journals: a run's audit entries that an outage of its audit log
cut off, kept in the run's journal until its resume writes them (`AuditOutbox`).

`SqlAuditOutbox` is the SQL journals' part (SQLite and Postgres, the `audit_outbox` table of
`runtime.schema`); the in-memory journal keeps the same JSON text in a dict. Every write is
fenced like the run's other writes: a worker that lost the run's lease keeps nothing and
lets go of nothing (`LeaseLost`).

A run's end keeps its last entries too (its `run_completed`): the session sets them in
`end_entries` around its `finish_run`, and the journal keeps them in the transaction that
journals the end (`EndEntries.kept` says it did). A crash before the log has them leaves
them kept, for the resume of the finished run to write; once the log has them the session
lets go of them. That is an insert and a delete per run, never a read; only a resume reads.
The entries travel beside `finish_run`, as the fence does (`current_fence`), not as an
argument: the Runtime protocol's `finish_run` takes none, and a journal that does not know
them (a runtime of your own) journals the end alone, as before.

An approval's use is kept the same way, with the outcome that journals it: the engine calls
`end_effect_keeping` (of `SqlJournal`, and of the in-memory journal), which keeps the entries
in the transaction of the outcome's write; the engine lets go of them once the log has them.

The audit log is not fenced by the journal, so a journal that refuses a run's write because
the writer's lease was lost notes it (`refused`, in `refused_fences`, which the run's session
sets): its audit writer stops at once, before the `LeaseLost` makes its way out through code
that audits on the way (a tool call's settlement), and a zombie's entries never reach the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loomgraph.protocols import AuditEntry, RunStatus
from loomgraph.runtime.audit_entries import entry_from_text, entry_text
from loomgraph.runtime.codec import check_version
from loomgraph.runtime.errors import JournalCorrupted, LeaseLost, UnknownRun
from loomgraph.runtime.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from loomgraph._storage.cursor import Cursor
    from loomgraph.protocols.runtime import Lease

__all__ = [
    "EndEntries",
    "SqlAuditOutbox",
    "end_entries",
    "ending",
    "refused",
    "refused_fences",
]


@dataclass(slots=True)
class EndEntries:
    """The audit entries a run's end keeps in its journal, in the transaction of its
    `finish_run` (set in `end_entries` around the call); `kept` is set by the journal once
    it committed them with the end."""

    run_id: str
    entries: tuple[AuditEntry, ...]
    kept: bool = False


# The entries the current task's next `finish_run` of `run_id` keeps with the end.
end_entries: ContextVar[EndEntries | None] = ContextVar("loomgraph_end_entries", default=None)


def ending(run_id: str, status: RunStatus) -> EndEntries | None:
    """The entries to keep with the end of `run_id` being journaled as `status` (None: none,
    or `status` ends nothing: a run reopened `running`)."""
    end = end_entries.get()
    if end is None or status.in_progress or end.run_id != run_id or not end.entries:
        return None
    return end


# The runs of the current task's run whose writes a journal refused for a lost lease (set by
# the run's session, read by its audit writer; tasks the run starts share it).
refused_fences: ContextVar[set[str] | None] = ContextVar("loomgraph_refused_fences", default=None)


def refused(err: LeaseLost) -> LeaseLost:
    """Note a write refused because the writer's lease was lost (`refused_fences`, when a
    session set it); the error, for the journal to raise."""
    runs = refused_fences.get()
    if runs is not None:
        runs.add(err.run_id)
    return err


class SqlAuditOutbox:
    """`AuditOutbox` over the journal's SQL, for `SqlJournal` (which supplies the rest)."""

    if TYPE_CHECKING:
        location: str
        _sql: dict[str, str]

        def _fence(self, run_id: str, fence: Lease | None) -> Lease | None: ...

        def _fenced(
            self, name: str, args: Sequence[Any], lease: Lease | None
        ) -> tuple[str, Sequence[Any]]: ...

        def _write(self) -> AbstractAsyncContextManager[Cursor]: ...

        async def _exec(self, name: str, args: Sequence[Any]) -> int: ...

        async def _fetch(self, name: str, args: Sequence[Any]) -> list[Sequence[Any]]: ...

        async def _refused(
            self, run_id: str, lease: Lease | None, cur: Cursor | None = None
        ) -> Exception: ...

    async def keep_audit_entries(self, run_id: str, entries: Sequence[AuditEntry]) -> None:
        """Keep entries of a run after those kept already, in one transaction; fenced.
        `UnknownRun` for a run the journal does not hold."""
        texts = [entry_text(entry) for entry in entries]
        if not texts:
            return
        async with self._write() as cur:
            await self._fenced_by(cur, run_id)
            await self._keep_in(cur, run_id, texts)

    async def _keep_in(self, cur: Cursor, run_id: str, texts: Sequence[str]) -> None:
        """Keep entries of a run (as `entry_text`) in the transaction of `cur`, after those
        kept already (one statement each); its caller fenced the transaction."""
        for text in texts:
            if not await cur.execute(self._sql["outbox_add"], (text, SCHEMA_VERSION, run_id)):
                raise UnknownRun(run_id)

    async def kept_audit_entries(self, run_id: str) -> list[AuditEntry]:
        """The entries kept for a run, oldest first ([] for none, or an unknown run)."""
        rows = await self._fetch("outbox_read", (run_id,))
        try:
            kept = []
            for text, v in rows:
                check_version(v, f"{self.location}: a kept audit entry of run {run_id!r}")
                kept.append(entry_from_text(text))
        except (ValueError, TypeError) as err:
            raise JournalCorrupted(self.location, f"unreadable row: {err}") from None
        return kept

    async def drop_audit_entries(self, run_id: str, count: int) -> None:
        """Let go of the `count` oldest entries kept for a run; fenced (one statement: a
        run's end lets go of its `run_completed` so, once the log has it)."""
        if count <= 0:
            return
        lease = self._fence(run_id, None)
        name, args = self._fenced("outbox_drop", (run_id, run_id, count), lease)
        if await self._exec(name, args) or lease is None:
            return
        # Nothing let go of: none was kept, or the lease was lost (then say so).
        if not await self._fetch("fence", (lease.run_id, lease.token)):
            raise await self._refused(run_id, lease)

    async def _fenced_by(self, cur: Cursor, run_id: str) -> None:
        """Refuse a write of a writer whose lease on the run is no longer current
        (`LeaseLost`), in the write's own transaction."""
        lease = self._fence(run_id, None)
        if lease is not None and not await cur.fetch(
            self._sql["fence"], (lease.run_id, lease.token)
        ):
            raise await self._refused(run_id, lease, cur)

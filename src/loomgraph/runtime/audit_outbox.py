"""The audit outbox of the journals: a run's audit entries that an outage of its audit log
cut off, kept in the run's journal until its resume writes them (`AuditOutbox`).

`SqlAuditOutbox` is the SQL journals' part (SQLite and Postgres, the `audit_outbox` table of
`runtime.schema`); the in-memory journal keeps the same JSON text in a dict. Every write is
fenced like the run's other writes: a worker that lost the run's lease keeps nothing and
lets go of nothing (`LeaseLost`). Only a run cut off by an outage writes here, and only a
resume reads: nothing of it is on a run's ordinary path.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from loomgraph.protocols import AuditEntry
from loomgraph.runtime.audit_entries import entry_from_text, entry_text
from loomgraph.runtime.codec import check_version
from loomgraph.runtime.errors import JournalCorrupted, UnknownRun
from loomgraph.runtime.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from loomgraph._storage.cursor import Cursor
    from loomgraph.protocols.runtime import Lease

__all__ = ["SqlAuditOutbox"]


class SqlAuditOutbox:
    """`AuditOutbox` over the journal's SQL, for `SqlJournal` (which supplies the rest)."""

    if TYPE_CHECKING:
        location: str
        _sql: dict[str, str]

        def _fence(self, run_id: str, fence: Lease | None) -> Lease | None: ...

        def _write(self) -> AbstractAsyncContextManager[Cursor]: ...

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
            rows = await cur.fetch(self._sql["outbox_next"], (run_id,))
            if not rows:
                raise UnknownRun(run_id)
            run, first = int(rows[0][0]), int(rows[0][1])
            for seq, text in enumerate(texts, first):
                await cur.execute(self._sql["outbox_add"], (run, seq, text, SCHEMA_VERSION))

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
        """Let go of the `count` oldest entries kept for a run; fenced."""
        if count <= 0:
            return
        async with self._write() as cur:
            await self._fenced_by(cur, run_id)
            await cur.execute(self._sql["outbox_drop"], (run_id, run_id, count))

    async def _fenced_by(self, cur: Cursor, run_id: str) -> None:
        """Refuse a write of a writer whose lease on the run is no longer current
        (`LeaseLost`), in the write's own transaction."""
        lease = self._fence(run_id, None)
        if lease is not None and not await cur.fetch(
            self._sql["fence"], (lease.run_id, lease.token)
        ):
            raise await self._refused(run_id, lease, cur)

"""Run leases over the SQL journals' `leases` table (SQLite and Postgres): taking, extending,
giving back and reading a run's lease, and fencing a write with it.

A fenced write is made only while the writer's fencing token is the run's current one (the
`*_fenced` statements of `runtime.schema`): a worker whose lease was taken over writes
nothing (`LeaseLost`). `SqlLeases` is a part of `SqlJournal`, which supplies the SQL and the
cursors, as `SqlAuditOutbox` is; `SqlJournal`'s writes call `_fence`, `_fenced` and `_refused`
as their own methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from loomgraph._storage.cursor import Constraint, Cursor
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.runtime.errors import LeaseLost, RunConflict, UnknownRun
from loomgraph.runtime.text import check_id

__all__ = ["SqlLeases", "constraint_error"]


class SqlLeases:
    """Leases and fencing over the journal's SQL, for `SqlJournal` (which supplies the rest)."""

    if TYPE_CHECKING:
        lease_seconds: float
        _sql: dict[str, str]

        def _write(self) -> AbstractAsyncContextManager[Cursor]: ...

        async def _exec(self, name: str, args: Sequence[Any]) -> int: ...

        async def _fetch(self, name: str, args: Sequence[Any]) -> list[Sequence[Any]]: ...

    def _fence(self, run_id: str, fence: Lease | None) -> Lease | None:
        """The lease a write to `run_id` is fenced with: the one given, else the one the
        current task holds (`current_fence`) when it is this run's; None: unfenced."""
        lease = fence if fence is not None else current_fence.get()
        return lease if lease is not None and lease.run_id == run_id else None

    def _fenced(
        self, name: str, args: Sequence[Any], lease: Lease | None
    ) -> tuple[str, Sequence[Any]]:
        """The statement and arguments of a write, conditional on the lease when fenced."""
        if lease is None:
            return name, args
        return f"{name}_fenced", (*args, lease.run_id, lease.token)

    async def _refused(
        self, run_id: str, lease: Lease | None, cur: Cursor | None = None
    ) -> Exception:
        """Why a write to a run changed no row: the run is unknown, or the lease was lost."""
        if cur is not None:
            exists = await cur.fetch(self._sql["run_exists"], (run_id,))
        else:
            exists = await self._fetch("run_exists", (run_id,))
        if not exists or lease is None:
            return UnknownRun(run_id)
        return LeaseLost(run_id, lease.token)

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float | None = None, *, take_from: str | None = None
    ) -> Lease:
        """Take (or extend) the lease on a run; RunConflict while another owner holds it.

        `take_from` names an owner whose lease may be taken although it has not expired
        (the caller knows that owner is dead); a new owner gets the next fencing token.
        """
        ttl = float(self.lease_seconds if ttl is None else ttl)
        check_id("lease owner", owner)
        try:
            async with self._write() as cur:
                taken = await cur.execute(self._sql["take_lease"], (run_id, owner, ttl, take_from))
                holder, expires_at, now, token = (await cur.fetch(self._sql["lease"], (run_id,)))[0]
        except Constraint as err:
            raise constraint_error(err, run_id, "lease conflict") from None
        if not taken:
            raise RunConflict(
                run_id,
                f"leased by {holder!r} for another {expires_at - now:.1f}s",
                owner=holder,
                expires_at=expires_at,
            )
        return Lease(run_id, owner, expires_at, int(token))

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Lease:
        """Extend a lease this owner holds; RunConflict when it was lost to another owner."""
        ttl = float(self.lease_seconds if ttl is None else ttl)
        async with self._write() as cur:
            renewed = await cur.execute(self._sql["renew_lease"], (ttl, run_id, owner))
            rows = await cur.fetch(self._sql["lease"], (run_id,))
        if not renewed:
            holder = rows[0][0] if rows and rows[0][0] else None
            raise LeaseLost(
                run_id,
                int(rows[0][3]) if rows else 0,
                f"{owner!r} no longer holds the lease (holder: {holder!r})",
                owner=holder,
            )
        return Lease(run_id, owner, rows[0][1], int(rows[0][3]))

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give a lease back; False when this owner did not hold it."""
        return bool(await self._exec("release_lease", (run_id, owner)))

    async def lease(self, run_id: str) -> Lease | None:
        """The current lease on a run, expired or not, or None (never taken, or released)."""
        rows = await self._fetch("lease", (run_id,))
        if not rows or not rows[0][0]:
            return None
        return Lease(run_id, rows[0][0], rows[0][1], int(rows[0][3]))


def constraint_error(err: Constraint, run_id: str, unique_detail: str) -> Exception:
    """The run error a constraint a write broke means: a row of no run (`UnknownRun`), or
    one recorded already (`RunConflict` with `unique_detail`). Here, not in `sql_journal`,
    whose writes use it too: that module imports this one, not the reverse."""
    if err.kind == "foreign_key":
        return UnknownRun(run_id)
    return RunConflict(run_id, unique_detail)

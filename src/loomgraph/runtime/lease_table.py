"""Run leases kept in process memory, for `InMemoryRuntime`: the semantics of the SQL
journals' `leases` table (`runtime/schema.py`, `take_lease` and the fenced writes).

An owner takes a free, expired or (`take_from`) dead owner's lease with the next fencing
token; the owner itself extends its lease and keeps its token; a release empties the owner
but keeps the token, so an old token never comes back. A write fenced with a lease is made
only while that lease's token is the run's current one (`InMemoryRuntime._fence` reads
`rows`), as the SQL journals' `... AND EXISTS (SELECT 1 FROM leases WHERE run_id = ? AND
token = ?)`. Expiry is by this process's monotonic clock, which is the journal's clock
here: a step of the wall clock (NTP correcting it, a VM resumed) neither ends a live lease
nor makes an ended one live. `Lease.expires_at` is in epoch seconds, as the wall clock read
when the lease was taken or extended (as the SQL journals store it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loomgraph.protocols.runtime import Lease
from loomgraph.runtime.errors import LeaseLost, RunConflict
from loomgraph.runtime.text import check_id

__all__ = ["LeaseRow", "LeaseTable"]


@dataclass(slots=True)
class LeaseRow:
    """One run's lease: its owner ("" once released), when it ends (by `time.monotonic()`,
    which decides; and in epoch seconds, which `Lease.expires_at` tells), its fencing token."""

    owner: str
    ends: float
    expires_at: float
    token: int

    def last(self, ttl: float) -> None:
        """End the lease `ttl` seconds from now (now, with 0)."""
        self.ends, self.expires_at = time.monotonic() + ttl, time.time() + ttl


class LeaseTable:
    """The leases of the runs of one in-memory journal. Every method is synchronous: on one
    event loop, taking and checking a lease is atomic, as the SQL journals' upsert is."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        # Run id -> its lease. Read directly by the journal's fence check, made at every
        # write of a leased run: a dict lookup, no call (the hot path of the default journal).
        self.rows: dict[str, LeaseRow] = {}

    def acquire(self, run_id: str, owner: str, ttl: float, take_from: str | None) -> Lease:
        """Take (or extend) the lease on a run; `RunConflict` while another owner holds it
        (`take_from`: an owner known to be dead, whose live lease may be taken)."""
        check_id("lease owner", owner)
        now = time.monotonic()
        row = self.rows.get(run_id)
        if row is None:
            row = self.rows[run_id] = LeaseRow(owner, now + ttl, time.time() + ttl, 1)
        elif row.owner == owner:
            row.last(ttl)
        elif row.ends <= now or (take_from is not None and row.owner == take_from):
            row.owner, row.token = owner, row.token + 1
            row.last(ttl)
        else:
            raise RunConflict(
                run_id,
                f"leased by {row.owner!r} for another {row.ends - now:.1f}s",
                owner=row.owner,
                expires_at=row.expires_at,
            )
        return _lease(run_id, row)

    def renew(self, run_id: str, owner: str, ttl: float) -> Lease:
        """Extend a lease this owner holds; `LeaseLost` when it was lost to another owner."""
        row = self.rows.get(run_id)
        if row is None or not owner or row.owner != owner:
            holder = row.owner if row is not None and row.owner else None
            raise LeaseLost(
                run_id,
                row.token if row is not None else 0,
                f"{owner!r} no longer holds the lease (holder: {holder!r})",
                owner=holder,
            )
        row.last(ttl)
        return _lease(run_id, row)

    def release(self, run_id: str, owner: str) -> bool:
        """Give a lease back (its token stays); False when this owner did not hold it."""
        row = self.rows.get(run_id)
        if row is None or not owner or row.owner != owner:
            return False
        row.owner = ""
        row.last(0.0)
        return True

    def lease(self, run_id: str) -> Lease | None:
        """The current lease on a run, expired or not; None when never taken, or released."""
        row = self.rows.get(run_id)
        if row is None or not row.owner:
            return None
        return _lease(run_id, row)

    def live(self, run_id: str) -> bool:
        """Whether someone holds the run's lease now (it is held and has not expired)."""
        row = self.rows.get(run_id)
        return row is not None and bool(row.owner) and row.ends > time.monotonic()

    def forget(self, run_id: str) -> None:
        """Drop a forgotten run's lease."""
        self.rows.pop(run_id, None)


def _lease(run_id: str, row: LeaseRow) -> Lease:
    """The row as a `Lease`."""
    return Lease(run_id, row.owner, row.expires_at, row.token)

"""What the durable budget ledgers share: `SqliteLedger` (in `sqlite_ledger`: one file, many
processes) and `PostgresLedger` (in `pg_ledger`).

Both keep three tables — scope totals, open holds, run clocks — and share every statement
and the transaction body (`_SqlLedger.transact`); a backend only says how to open a
transaction and how to lock the scopes in it. SQLite's `BEGIN IMMEDIATE` takes the database
write lock before the totals are read, so read-check-write is atomic across processes;
PostgreSQL takes one transaction-level advisory lock per scope, in sorted order (no deadlock),
so runs of different users do not wait for each other. A transaction naming only a hold (a
release) learns its scopes by reading it, locks them, and decides on the hold as read again
under the locks, never on one that a settlement committed meanwhile has ended
(`_SqlLedger._locked_hold`). Locks taken in two rounds can deadlock; the transaction the
server fails then is done again.

A ledger that cannot be reached — its SQLite file's lock held past `busy_timeout`, a file
that cannot be opened, a Postgres server that refuses, drops the connection or does not
answer within `connect_timeout` / `command_timeout` — raises `LedgerUnavailable`, on opening
and on every operation; every other error (a constraint, a damaged file, a row that does not
decode, what `decide` raises) keeps its own type.
"""

from __future__ import annotations

import contextlib
import json
from abc import abstractmethod
from collections.abc import Sequence

from loomgraph._storage.cursor import Cursor
from loomgraph.governance.ledger import (
    Charge,
    Decide,
    Hold,
    Ledger,
    LedgerView,
    Totals,
    _scope_names,
    apply_change,
)
from loomgraph.governance.ledger_tables import (
    CHARGE_COLUMNS,
    HOLD_COLUMNS,
    charge_of,
    dump_amounts,
    effect_columns,
    hold_of,
    load_amounts,
)

CONFLICT_TRIES = 5
"""How many times a ledger transaction is made when the store keeps rolling it back for a
conflict with another one (a deadlock): each such rollback let the other go on."""


class _SqlLedger(Ledger):
    """The transaction body shared by the SQL ledgers; statements use `?` placeholders."""

    def __init__(self, prefix: str) -> None:
        p = prefix
        self._sql = {
            "hold": f"SELECT {HOLD_COLUMNS} FROM {p}loom_budget_holds WHERE id = ?",
            "holds": f"SELECT {HOLD_COLUMNS} FROM {p}loom_budget_holds ORDER BY created_at, id",
            "run_holds": f"SELECT {HOLD_COLUMNS} FROM {p}loom_budget_holds WHERE run_id = ? "
            "ORDER BY created_at, id",
            "totals": f"SELECT scope, spent, reserved FROM {p}loom_budget_scopes WHERE scope = ?",
            "upsert": f"INSERT INTO {p}loom_budget_scopes (scope, spent, reserved) "
            "VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
            "spent = excluded.spent, reserved = excluded.reserved",
            "insert_hold": f"INSERT INTO {p}loom_budget_holds ({HOLD_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            "delete_hold": f"DELETE FROM {p}loom_budget_holds WHERE id = ?",
            # A charge is made once: a second one for the same hold is ignored.
            "insert_charge": f"INSERT INTO {p}loom_budget_charges ({CHARGE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            "charges": f"SELECT {CHARGE_COLUMNS} FROM {p}loom_budget_charges WHERE run_id = ? "
            "ORDER BY created_at, id",
            "charge": f"SELECT {CHARGE_COLUMNS} FROM {p}loom_budget_charges WHERE id = ?",
            "clock_insert": f"INSERT INTO {p}loom_budget_runs (run_id, started_at, deadline) "
            "VALUES (?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
            "clock": f"SELECT started_at, deadline FROM {p}loom_budget_runs WHERE run_id = ?",
            "forget": f"DELETE FROM {p}loom_budget_runs WHERE run_id = ?",
        }

    @abstractmethod
    def _transaction(self, durable: bool = True) -> contextlib.AbstractAsyncContextManager[Cursor]:
        """A cursor inside one committed-on-exit, rolled-back-on-error transaction; one that
        is not `durable` may skip what makes a commit survive a power cut."""

    def _read(self) -> contextlib.AbstractAsyncContextManager[Cursor]:
        """For reads of one statement each (totals, holds, charges): a transaction without
        fsync here; a store that can read without the write lock overrides it."""
        return self._transaction(durable=False)

    async def _lock_scopes(self, cur: Cursor, scopes: Sequence[str]) -> None:
        """Serialise transactions on these scopes (SQLite's write lock already does)."""

    async def _locked_hold(
        self, cur: Cursor, scopes: Sequence[str], hold_id: str | None
    ) -> tuple[Hold | None, Charge | None, list[str]]:
        """Lock `scopes` and the hold's, then the hold (or its crash charge) as it is under
        those locks, and the names of every scope to read.

        The hold's scopes are known only by reading it, before their locks are taken: under
        READ COMMITTED a transaction ending the same hold (a settlement, a release) may commit
        between that read and the locks, so the hold is read again until a read made under
        the locks finds no scope unlocked. A hold's scopes never change, so that is the second
        read at most; and a transaction that named them all (a settlement) reads it once.
        """
        locked: set[str] = set()
        wanted = set(scopes)
        while True:
            # Sorted within a round. A second round follows locks already taken only for a
            # caller naming some of its hold's scopes but not all (a release names none),
            # which could deadlock; the server would then fail one of the two.
            await self._lock_scopes(cur, sorted(wanted - locked))
            locked |= wanted
            hold = charged = None
            if hold_id is not None:
                rows = await cur.fetch(self._sql["hold"], [hold_id])
                hold = hold_of(rows[0]) if rows else None
            if hold_id is not None and hold is None:  # ended: by a crash charge, perhaps
                rows = await cur.fetch(self._sql["charge"], [hold_id])
                charged = charge_of(rows[0]) if rows else None
            names = _scope_names(scopes, hold)
            if locked.issuperset(names):
                return hold, charged, names
            wanted = locked | set(names)

    async def transact(
        self, scopes: Sequence[str], hold_id: str | None, decide: Decide, *, durable: bool = True
    ) -> dict[str, Totals]:
        """Read the totals and the hold, decide, write — in one transaction.

        Only a transaction that may add a hold guarding a cap (no `hold_id`: a reservation,
        or a settlement of nothing held; not `durable=False`) must survive a power cut before
        the effect it allows. One that ends a hold need not: if a power cut loses it, the
        hold it ended is still there, and is charged at its reserved amount when the run is
        recovered — which only over-counts. Nor one whose hold guards no cap: a power cut can
        lose that count, never let a cap be passed.

        A transaction the store rolled back for a conflict with another (`_conflicted`) did
        nothing: it is done again, `decide` included, up to `CONFLICT_TRIES` times.
        """
        tries = 1
        while True:
            try:
                return await self._transact_once(scopes, hold_id, decide, durable)
            except Exception as err:
                if tries == CONFLICT_TRIES or not self._conflicted(err):
                    raise
                tries += 1

    def _conflicted(self, err: Exception) -> bool:
        """Whether `err` is the store's rollback of a transaction for a conflict with another
        (none in SQLite, whose write lock serialises them)."""
        return False

    async def _transact_once(
        self, scopes: Sequence[str], hold_id: str | None, decide: Decide, durable: bool
    ) -> dict[str, Totals]:
        async with self._transaction(durable=durable and hold_id is None) as cur:
            hold, charged, names = await self._locked_hold(cur, scopes, hold_id)
            totals: dict[str, Totals] = {}
            for name in names:
                rows = await cur.fetch(self._sql["totals"], [name])
                totals[name] = (
                    Totals(load_amounts(rows[0][1]), load_amounts(rows[0][2])) if rows else Totals()
                )
            change = decide(LedgerView(totals, hold, charged))
            updated = apply_change(totals, change)
            for name, total in updated.items():
                await cur.execute(
                    self._sql["upsert"],
                    [name, dump_amounts(total.spent), dump_amounts(total.reserved)],
                )
            if change.remove is not None:
                await cur.execute(self._sql["delete_hold"], [change.remove.id])
            if change.hold is not None:
                h = change.hold
                scopes, amounts = json.dumps(list(h.scopes)), dump_amounts(h.amounts)
                row = [h.id, h.run_id, scopes, amounts, h.created_at, *effect_columns(h.effect)]
                await cur.execute(self._sql["insert_hold"], row)
            if change.charge is not None:
                c = change.charge
                row = [
                    c.id,
                    c.run_id,
                    dump_amounts(c.amounts),
                    c.created_at,
                    *effect_columns(c.effect),
                ]
                await cur.execute(self._sql["insert_charge"], row)
            return updated

    async def totals(self, scope: str) -> Totals:
        """One scope's totals, read in a transaction of its own."""
        async with self._read() as cur:
            rows = await cur.fetch(self._sql["totals"], [scope])
        return Totals(load_amounts(rows[0][1]), load_amounts(rows[0][2])) if rows else Totals()

    async def holds(self, run_id: str | None = None) -> list[Hold]:
        """Open holds, oldest first."""
        async with self._read() as cur:
            if run_id is None:
                rows = await cur.fetch(self._sql["holds"], [])
            else:
                rows = await cur.fetch(self._sql["run_holds"], [run_id])
        return [hold_of(r) for r in rows]

    async def charges(self, run_id: str) -> list[Charge]:
        """The run's crash charges, oldest first."""
        async with self._read() as cur:
            rows = await cur.fetch(self._sql["charges"], [run_id])
        return [charge_of(r) for r in rows]

    async def run_clock(
        self, run_id: str, started_at: float, deadline: float | None
    ) -> tuple[float, float | None]:
        """Insert the clock unless the run has one; return the stored one."""
        async with self._transaction() as cur:
            await cur.execute(self._sql["clock_insert"], [run_id, started_at, deadline])
            row = (await cur.fetch(self._sql["clock"], [run_id]))[0]
        return float(row[0]), None if row[1] is None else float(row[1])

    async def forget_run(self, run_id: str) -> None:
        """Delete the run's clock (losing that to a power cut leaves a clock nobody reads)."""
        async with self._transaction(durable=False) as cur:
            await cur.execute(self._sql["forget"], [run_id])

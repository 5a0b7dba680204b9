"""Where a budget's ledger lives once an Agent binds it: `ledger_at` (the ledger a journal
keeps in its own database), and `LedgerPlaces`, the record a budget and its bound copies
share of where their ledgers went — so the budget object the user holds reads the ledger
its Agent placed, and says so when there are several to choose from."""

from __future__ import annotations

import threading

from loomgraph.errors import LoomgraphError
from loomgraph.governance.ledger import Ledger
from loomgraph.governance.pg_ledger import PostgresLedger
from loomgraph.governance.sqlite_ledger import SqliteLedger
from loomgraph.protocols.ledger import LedgerSite, SqliteSite

__all__ = ["AmbiguousLedger", "LedgerPlaces", "ledger_at"]


def ledger_at(site: LedgerSite) -> Ledger:
    """A ledger in a journal's database: its SQLite file, or its Postgres schema (waiting
    for the server no longer than the journal does, on a pool no bigger)."""
    if isinstance(site, SqliteSite):
        return SqliteLedger(site.path)
    return PostgresLedger(
        site.dsn,
        schema=site.schema,
        pool_size=site.pool_size,
        connect_timeout=site.connect_timeout,
        command_timeout=site.command_timeout,
    )


class AmbiguousLedger(LoomgraphError):
    """A budget bound to several Agents whose ledgers differ was asked what was spent: its
    totals are in more than one place. Ask each Agent's own budget instead:
    `agent.deps.budget.totals(...)`. `ledgers` are the ledgers in use."""

    def __init__(self, ledgers: list[Ledger]) -> None:
        names = ", ".join(repr(ledger) for ledger in ledgers)
        super().__init__(
            f"this budget is bound to Agents that keep their spending in {len(ledgers)} "
            f"different ledgers ({names}): read one Agent's with "
            "`agent.deps.budget.totals(...)` (or `.charges`, `.crashed_usage`)"
        )
        self.ledgers = ledgers


class LedgerPlaces:
    """The ledgers a budget's bound copies use, one per place: the journal's site they
    were placed at, or None for the budget's own ledger (kept by a copy bound to an Agent
    whose journal has no site, or given by the user)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # Agents may be made on several threads
        self._used: dict[LedgerSite | None, Ledger] = {}

    def place(self, site: LedgerSite | None, own: Ledger) -> Ledger:
        """The ledger for a copy bound at `site` (None: it keeps `own`), recorded. Each
        copy gets its own ledger object, so closing one Agent closes no other's."""
        ledger = own if site is None else ledger_at(site)
        with self._lock:
            self._used.setdefault(site, ledger)
        return ledger

    def reading(self, own: Ledger) -> Ledger:
        """The ledger the unbound budget reads: `own` until it is bound, then the one its
        copies use; AmbiguousLedger when they use several."""
        with self._lock:
            used = list(self._used.values())
        if not used:
            return own
        if len({getattr(ledger, "place", id(ledger)) for ledger in used}) > 1:
            raise AmbiguousLedger(used)
        return used[0]

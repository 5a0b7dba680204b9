"""`ledger_at`: the budget ledger a journal keeps in its own database."""

from __future__ import annotations

from loomgraph.governance.ledger import Ledger
from loomgraph.governance.pg_ledger import PostgresLedger
from loomgraph.governance.sql_ledger import SqliteLedger
from loomgraph.protocols.ledger import LedgerSite, SqliteSite

__all__ = ["ledger_at"]


def ledger_at(site: LedgerSite) -> Ledger:
    """A ledger in a journal's database: its SQLite file, or its Postgres schema."""
    if isinstance(site, SqliteSite):
        return SqliteLedger(site.path)
    return PostgresLedger(site.dsn, schema=site.schema)

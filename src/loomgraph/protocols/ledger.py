"""Where a budget ledger can live, and the two protocols an Agent binds a budget with.

A durable journal says which database it is in (`LedgerHost.ledger_site`); a budget that
can be fitted to an Agent returns a bound copy of itself (`Bindable.bind()`), taking that
site for its ledger when it has none of its own. The Agent never looks at concrete classes,
and the budget the user made is never changed. Imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

__all__ = ["Bindable", "LedgerHost", "LedgerSite", "PostgresSite", "SqliteSite"]


@dataclass(frozen=True, slots=True)
class SqliteSite:
    """An SQLite database file."""

    path: str


@dataclass(frozen=True, slots=True)
class PostgresSite:
    """A PostgreSQL database and schema, and the journal's limits on waiting for it (which
    a ledger placed there keeps: its waits are no longer than the journal's). The limits are
    not part of the place: two journals in one schema are one site."""

    dsn: str
    schema: str
    connect_timeout: float = field(default=10.0, compare=False)
    command_timeout: float = field(default=15.0, compare=False)
    pool_size: int = field(default=4, compare=False)


LedgerSite = SqliteSite | PostgresSite


@runtime_checkable
class LedgerHost(Protocol):
    """A journal whose database can also hold a budget ledger (so caps hold across
    processes)."""

    @property
    def ledger_site(self) -> LedgerSite | None:
        """The database, or None when it is not shared (e.g. an in-memory SQLite file).

        A property, not a method: a journal wrapper that forwards attributes (and turns
        methods into coroutines) forwards it unchanged."""
        ...


@runtime_checkable
class Bindable(Protocol):
    """A budget an Agent fits to itself: `bind` returns a new budget, leaving this one as is.

    The bound budget prices with `model` unless it has a model, keeps its ledger at `site`
    unless it has a ledger of its own (and `site` is not None), and reports warnings to
    `on_warning` unless it has a callback; `close()` lets go of what the binding gave it.
    """

    def bind(
        self, *, model: str, site: LedgerSite | None, on_warning: Callable[[Any], Any]
    ) -> Self:
        """A budget bound to one Agent."""
        ...

    async def close(self) -> None:
        """Close the bound budget's ledger (the next use opens it again)."""
        ...

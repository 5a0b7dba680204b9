"""Runtime journals: where runs, transitions and effects are recorded.

`SqliteRuntime` and `PostgresRuntime` are loaded on first use, so importing this package does
not import aiosqlite or asyncpg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names
from loomgraph.runtime.memory import InMemoryRuntime, UnknownRun

if TYPE_CHECKING:
    from loomgraph.runtime.errors import (
        JournalCorrupted,
        JournalDamaged,
        JournalError,
        JournalUnavailable,
        JournalVersionError,
        RunConflict,
        RunPossiblyLost,
    )
    from loomgraph.runtime.postgres import PostgresRuntime
    from loomgraph.runtime.sqlite import SqliteRuntime

__all__ = [
    "InMemoryRuntime",
    "JournalCorrupted",
    "JournalDamaged",
    "JournalError",
    "JournalUnavailable",
    "JournalVersionError",
    "PostgresRuntime",
    "RunConflict",
    "RunExists",
    "RunPossiblyLost",
    "SqliteRuntime",
    "UnknownRun",
]

_LAZY = {
    "SqliteRuntime": "loomgraph.runtime.sqlite",
    "PostgresRuntime": "loomgraph.runtime.postgres",
    "JournalError": "loomgraph.runtime.errors",
    "JournalCorrupted": "loomgraph.runtime.errors",
    "JournalUnavailable": "loomgraph.runtime.errors",
    "JournalVersionError": "loomgraph.runtime.errors",
    "RunConflict": "loomgraph.runtime.errors",
    "RunExists": "loomgraph.runtime.errors",
    "JournalDamaged": "loomgraph.runtime.errors",
    "RunPossiblyLost": "loomgraph.runtime.errors",
}

__getattr__ = lazy_names(__name__, _LAZY, globals())

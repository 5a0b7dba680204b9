"""Runtime journals: where runs, transitions and effects are recorded.

`SqliteRuntime` and `PostgresRuntime` are loaded on first use, so importing this package does
not import aiosqlite or asyncpg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    "RunPossiblyLost",
    "SqliteRuntime",
    "UnknownRun",
]

_LAZY = {
    "SqliteRuntime": "sqlite",
    "PostgresRuntime": "postgres",
    "JournalError": "errors",
    "JournalCorrupted": "errors",
    "JournalUnavailable": "errors",
    "JournalVersionError": "errors",
    "RunConflict": "errors",
    "JournalDamaged": "errors",
    "RunPossiblyLost": "errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loomgraph.runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"loomgraph.runtime.{module}"), name)

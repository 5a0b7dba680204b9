"""Memory backends: episodes, facts and working blocks per user, and auto-extraction.

Importing this package imports none of its modules: each name is imported on first use
(an agent without memory never loads them; `PostgresMemory` needs asyncpg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names

if TYPE_CHECKING:
    from loomgraph.memory.base import MemoryStore
    from loomgraph.memory.errors import (
        BlockNameError,
        MemoryBackendError,
        MemoryCorrupted,
        MemoryInputError,
        MemoryUnavailable,
        UserIdError,
    )
    from loomgraph.memory.extract import ExtractionError, Extractor, extract_facts
    from loomgraph.memory.in_memory import InMemoryMemory
    from loomgraph.memory.null import NoMemory
    from loomgraph.memory.postgres import PostgresMemory
    from loomgraph.memory.records import Fact, MemoryLimits, WorkingBlock
    from loomgraph.memory.sqlite import SqliteMemory
    from loomgraph.memory.tools import memory_tools

# Each public name and the module that defines it.
_MODULES = {
    "MemoryStore": "loomgraph.memory.base",
    "BlockNameError": "loomgraph.memory.errors",
    "MemoryBackendError": "loomgraph.memory.errors",
    "MemoryCorrupted": "loomgraph.memory.errors",
    "MemoryInputError": "loomgraph.memory.errors",
    "MemoryUnavailable": "loomgraph.memory.errors",
    "UserIdError": "loomgraph.memory.errors",
    "ExtractionError": "loomgraph.memory.extract",
    "Extractor": "loomgraph.memory.extract",
    "extract_facts": "loomgraph.memory.extract",
    "InMemoryMemory": "loomgraph.memory.in_memory",
    "NoMemory": "loomgraph.memory.null",
    "PostgresMemory": "loomgraph.memory.postgres",
    "SqliteMemory": "loomgraph.memory.sqlite",
    "Fact": "loomgraph.memory.records",
    "MemoryLimits": "loomgraph.memory.records",
    "WorkingBlock": "loomgraph.memory.records",
    "memory_tools": "loomgraph.memory.tools",
}

__getattr__ = lazy_names(__name__, _MODULES, globals())

__all__ = [
    "BlockNameError",
    "ExtractionError",
    "Extractor",
    "Fact",
    "InMemoryMemory",
    "MemoryBackendError",
    "MemoryCorrupted",
    "MemoryInputError",
    "MemoryLimits",
    "MemoryStore",
    "MemoryUnavailable",
    "NoMemory",
    "PostgresMemory",
    "SqliteMemory",
    "UserIdError",
    "WorkingBlock",
    "extract_facts",
    "memory_tools",
]

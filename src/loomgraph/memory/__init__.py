"""Memory backends: episodes, facts and working blocks per user, and auto-extraction.

`SqliteMemory` and `PostgresMemory` are loaded on first use (Postgres needs asyncpg).
"""

from __future__ import annotations

from typing import Any

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
from loomgraph.memory.null import InMemoryMemory, NoMemory
from loomgraph.memory.records import Fact, MemoryLimits, WorkingBlock
from loomgraph.memory.tools import memory_tools

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

_LAZY = {"SqliteMemory": "loomgraph.memory.sqlite", "PostgresMemory": "loomgraph.memory.postgres"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'loomgraph.memory' has no attribute {name!r}")

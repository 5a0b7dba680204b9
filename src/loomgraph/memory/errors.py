"""Typed errors of the memory backends; each message names the backend and where it lives."""

from __future__ import annotations

from loomgraph.errors import LoomgraphError

__all__ = ["MemoryBackendError", "MemoryCorrupted", "MemoryUnavailable"]


class MemoryBackendError(LoomgraphError):
    """Base class of memory backend errors (not the builtin `MemoryError`)."""

    def __init__(self, where: str, detail: str, message: str | None = None) -> None:
        super().__init__(message or f"{where}: {detail}")
        self.where = where
        self.detail = detail


class MemoryCorrupted(MemoryBackendError):
    """Not a database, damaged content, a missing table or an unknown schema version."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(where, detail, f"{where} is corrupted or not a loomgraph memory: {detail}")


class MemoryUnavailable(MemoryBackendError):
    """The store cannot be reached: unopenable file, wrong DSN, server down, lock timeout."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(where, detail, f"{where} is unavailable: {detail}")

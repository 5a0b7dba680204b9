"""Typed errors of the memory backends; each message names the backend and where it lives."""

from __future__ import annotations

from typing import Any

from loomgraph.errors import LoomgraphError

__all__ = [
    "BlockNameError",
    "MemoryBackendError",
    "MemoryCorrupted",
    "MemoryInputError",
    "MemoryUnavailable",
    "UserIdError",
]


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


class MemoryInputError(LoomgraphError, ValueError):
    """Input memory refuses before anything is written (a `ValueError`)."""


class BlockNameError(MemoryInputError):
    """A working-block name outside the allowed characters or length; `.name` is the name."""

    def __init__(self, name: Any, why: str) -> None:
        super().__init__(f"block name {name!r} {why}")
        self.name = name


class UserIdError(MemoryInputError):
    """A user id memory cannot keep apart from others or cannot store; `.user_id` is it."""

    def __init__(self, user_id: Any, why: str) -> None:
        if not isinstance(user_id, str):  # of another type: named by its type in `why`
            super().__init__(f"user_id {why}")
        else:
            shown = user_id if len(user_id) <= 80 else user_id[:79] + "…"
            super().__init__(f"user_id {shown!r} {why}")
        self.user_id = user_id

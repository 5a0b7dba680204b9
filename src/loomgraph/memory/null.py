"""Memory that keeps nothing: the default of an agent given no memory."""

from __future__ import annotations

from loomgraph.protocols import Episode, Message


class NoMemory:
    """Remembers nothing: every run starts from its prompt alone."""

    async def seed(self, *, user_id: str | None, session_id: str | None, query: str) -> str:
        """Nothing to add."""
        return ""

    async def history(self, *, user_id: str | None, session_id: str | None) -> list[Message]:
        """No earlier turns."""
        return []

    async def remember(self, episode: Episode) -> None:
        """Forget it."""

    async def close(self) -> None:
        """Nothing to let go of."""

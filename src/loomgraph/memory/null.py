"""Memory that keeps nothing, and a small in-process memory of past turns per session."""

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


class InMemoryMemory:
    """Episodes in process memory, partitioned by user; a session continues across runs."""

    def __init__(self, max_turns: int = 20) -> None:
        self.max_turns = max_turns
        self.episodes: list[Episode] = []

    async def seed(self, *, user_id: str | None, session_id: str | None, query: str) -> str:
        """Nothing beyond the session's turns (long-term recall comes with the SQL backends)."""
        return ""

    async def history(self, *, user_id: str | None, session_id: str | None) -> list[Message]:
        """The prompts and answers of this user's earlier runs in this session."""
        if session_id is None:
            return []
        turns: list[Message] = []
        for ep in self.episodes:
            if ep.user_id == user_id and ep.session_id == session_id:
                turns += [{"role": "user", "content": ep.prompt},
                          {"role": "assistant", "content": ep.output}]
        return turns[-2 * self.max_turns:]

    async def remember(self, episode: Episode) -> None:
        """Keep the episode."""
        self.episodes.append(episode)

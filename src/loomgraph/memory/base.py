"""`MemoryStore`: the behaviour every long-term memory backend shares, over a few primitives.

A backend stores episodes, facts and working blocks per user and ranks them for a query;
seeding, history, facts' supersession rule, forget hooks, export and profile are defined
once here, so in-memory, SQLite and Postgres cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from loomgraph.memory.records import (
    Fact,
    MemoryLimits,
    WorkingBlock,
    as_time,
    check_block,
    checked_key,
    compose_seed,
    episode_dict,
    now,
    prepare_facts,
    query_terms,
    turns,
)
from loomgraph.protocols import Episode, Message, Seed

ForgetHook = Callable[[str | None], Awaitable[Any]]


class MemoryStore(ABC):
    """Episodes, facts and working blocks, partitioned by user (None is the anonymous user).

    Every method takes the user id and touches that user's rows only.
    """

    def __init__(self, limits: MemoryLimits | None = None) -> None:
        self.limits = limits or MemoryLimits()
        self._forget_hooks: list[ForgetHook] = []

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:  # noqa: B027  (in memory there is nothing to open)
        """Open the store now rather than on first use."""

    async def close(self) -> None:  # noqa: B027
        """Release connections; the next use opens them again."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ the Memory protocol

    async def seed(self, *, user_id: str | None, session_id: str | None, query: str) -> Seed:
        """Working blocks, then the facts and other sessions' episodes most relevant to
        `query`; the answers it recalls are untrusted (`Seed.untrusted`)."""
        key, terms = checked_key(user_id), query_terms(query)
        blocks = await self._blocks(key)
        facts = await self._search_facts(key, terms, self.limits.facts) if terms else []
        episodes = (
            await self._search_episodes(key, terms, session_id, self.limits.episodes)
            if terms
            else []
        )
        return compose_seed(blocks, facts, episodes, self.limits)

    async def history(self, *, user_id: str | None, session_id: str | None) -> list[Message]:
        """The last `limits.turns` prompt/answer pairs of this user's session, oldest first."""
        if session_id is None or self.limits.turns == 0:
            return []
        return turns(await self._recent(checked_key(user_id), session_id, self.limits.turns))

    async def remember(self, episode: Episode) -> None:
        """Store a finished run (again for the same run id replaces it, so a resume adds none)."""
        if not isinstance(episode, Episode):
            raise TypeError(f"expected an Episode, got {type(episode).__name__}")
        await self._remember(checked_key(episode.user_id), episode)

    # ------------------------------------------------------------------ episodes

    async def episodes(
        self, user_id: str | None, *, session_id: str | None = None, limit: int | None = None
    ) -> list[Episode]:
        """A user's episodes (of one session, if given), oldest first; `limit` keeps the newest."""
        found = await self._episodes(checked_key(user_id), session_id, limit)
        for ep in found:
            ep.user_id = user_id
        return found

    async def search_episodes(
        self,
        user_id: str | None,
        query: str,
        *,
        exclude_session: str | None = None,
        limit: int | None = None,
    ) -> list[Episode]:
        """The user's episodes matching `query`, best first (newer first on equal rank)."""
        terms = query_terms(query)
        if not terms:
            return []
        found = await self._search_episodes(
            checked_key(user_id),
            terms,
            exclude_session,
            self.limits.episodes if limit is None else limit,
        )
        for ep in found:
            ep.user_id = user_id
        return found

    # ------------------------------------------------------------------ facts

    async def add_fact(
        self,
        user_id: str | None,
        subject: str,
        predicate: str,
        object: str,
        *,
        confidence: float = 1.0,
        source_run: str | None = None,
    ) -> Fact:
        """Record one fact; one with the same subject and predicate but another object ends."""
        return (
            await self.add_facts(
                user_id, [Fact(subject, predicate, object, confidence, source_run)]
            )
        )[0]

    async def add_facts(self, user_id: str | None, facts: Iterable[Fact]) -> list[Fact]:
        """Record facts in one transaction (all or none), as stored, in order.

        A fact whose (subject, predicate) has a current fact with a different object
        supersedes it: the old row gets `valid_to` and stays. The same object again keeps
        the old row, raising its confidence when the new one is higher.
        """
        prepared = prepare_facts(user_id, facts, now())
        if not prepared:
            return []
        stored = await self._add_facts(checked_key(user_id), prepared)
        for fact in stored:
            fact.user_id = user_id
        return stored

    async def facts(
        self, user_id: str | None, *, include_superseded: bool = False, limit: int | None = None
    ) -> list[Fact]:
        """A user's facts, newest first; only current ones unless `include_superseded`."""
        found = await self._facts(checked_key(user_id), include_superseded, limit)
        for fact in found:
            fact.user_id = user_id
        return found

    async def search_facts(
        self, user_id: str | None, query: str, *, limit: int | None = None
    ) -> list[Fact]:
        """The user's current facts matching `query`, best first (newer first on equal rank)."""
        terms = query_terms(query)
        if not terms:
            return []
        found = await self._search_facts(
            checked_key(user_id), terms, self.limits.facts if limit is None else limit
        )
        for fact in found:
            fact.user_id = user_id
        return found

    # ------------------------------------------------------------------ working blocks

    async def set_block(self, user_id: str | None, name: str, text: str) -> None:
        """Create or replace one named block of the user's working memory."""
        check_block(name, text, self.limits)
        await self._set_block(checked_key(user_id), name.strip(), text, now())

    async def get_blocks(self, user_id: str | None) -> dict[str, str]:
        """The user's working blocks, name → text, in the order they were first set."""
        return {b.name: b.text for b in await self._blocks(checked_key(user_id))}

    async def blocks(self, user_id: str | None) -> list[WorkingBlock]:
        """The user's working blocks with their update times, in the order first set."""
        return await self._blocks(checked_key(user_id))

    async def delete_block(self, user_id: str | None, name: str) -> bool:
        """Remove one block; False when the user had none of that name."""
        return await self._delete_block(checked_key(user_id), name.strip()) > 0

    # ------------------------------------------------------------------ the user's data

    def add_forget_hook(self, hook: ForgetHook) -> None:
        """Have `forget` await `hook(user_id)` first (an Extractor cancels pending work there)."""
        if hook not in self._forget_hooks:
            self._forget_hooks.append(hook)

    async def forget(
        self,
        user_id: str | None,
        session_id: str | None = None,
        before: float | datetime | None = None,
    ) -> int:
        """Delete the user's memory, or one session's / what is older; the rows deleted.

        With neither filter: everything of the user. With `session_id`: that session's
        episodes and the facts extracted from them (working blocks stay). With `before`:
        episodes, facts and blocks recorded before that time. Both: the intersection.
        Pending extraction for the user is cancelled first, so it cannot write afterwards.
        """
        key = checked_key(user_id)  # an id refused here cancels nothing of another user
        for hook in list(self._forget_hooks):
            await hook(user_id)
        return await self._forget(key, session_id, as_time(before))

    async def export(self, user_id: str | None) -> dict[str, Any]:
        """Everything stored for the user, as JSON-shaped data."""
        key = checked_key(user_id)
        return {
            "user_id": user_id,
            "exported_at": now(),
            "episodes": [episode_dict(ep) for ep in await self._episodes(key, None, None)],
            "facts": [
                {**f.to_dict(), "user_id": user_id} for f in await self._facts(key, True, None)
            ],
            "blocks": [b.to_dict() for b in await self._blocks(key)],
        }

    async def profile(self, user_id: str | None) -> dict[str, Any]:
        """A summary: counts, first and last activity, the newest facts and the blocks."""
        key = checked_key(user_id)
        counts = await self._counts(key)
        newest = await self._facts(key, False, 5)
        return {
            "user_id": user_id,
            **counts,
            "newest_facts": [f.text() for f in newest],
            "blocks": {b.name: b.text for b in await self._blocks(key)},
        }

    # ------------------------------------------------------------------ primitives
    # `key` is the user's partition (user_key); backends never see a None user.

    @abstractmethod
    async def _remember(self, key: str, episode: Episode) -> None: ...

    @abstractmethod
    async def _recent(self, key: str, session_id: str, limit: int) -> list[Episode]:
        """The newest `limit` episodes of a session, oldest first."""

    @abstractmethod
    async def _episodes(
        self, key: str, session_id: str | None, limit: int | None
    ) -> list[Episode]: ...

    @abstractmethod
    async def _search_episodes(
        self, key: str, terms: list[str], exclude_session: str | None, limit: int
    ) -> list[Episode]: ...

    @abstractmethod
    async def _add_facts(self, key: str, facts: list[Fact]) -> list[Fact]: ...

    @abstractmethod
    async def _facts(self, key: str, include_superseded: bool, limit: int | None) -> list[Fact]: ...

    @abstractmethod
    async def _search_facts(self, key: str, terms: list[str], limit: int) -> list[Fact]: ...

    @abstractmethod
    async def _set_block(self, key: str, name: str, text: str, at: float) -> None: ...

    @abstractmethod
    async def _blocks(self, key: str) -> list[WorkingBlock]: ...

    @abstractmethod
    async def _delete_block(self, key: str, name: str) -> int: ...

    @abstractmethod
    async def _forget(self, key: str, session_id: str | None, before: float | None) -> int: ...

    @abstractmethod
    async def _counts(self, key: str) -> dict[str, Any]:
        """episodes, sessions, facts, superseded_facts, blocks, first_seen, last_seen."""

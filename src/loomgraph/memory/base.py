"""`MemoryStore`: the behaviour every long-term memory backend shares, over a few primitives.

A backend stores episodes, facts and working blocks per user and ranks them for a query;
seeding, history, facts' supersession rule, forget hooks, export and profile are defined
once here, so in-memory, SQLite and Postgres cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from loomgraph.memory.errors import BlockNameError, MemoryInputError
from loomgraph.memory.inputs import (
    MAX_LIMIT,
    check_before,
    check_id,
    check_limit,
    check_query,
    check_time,
    stored_text,
)
from loomgraph.memory.records import (
    Fact,
    MemoryLimits,
    WorkingBlock,
    as_time,
    check_block,
    checked_key,
    episode_dict,
    now,
    prepare_facts,
    query_terms,
    turns,
)
from loomgraph.memory.seed import compose_seed
from loomgraph.protocols import Episode, Message, Seed, escaped

# Awaited as hook(user_id, session_id, before) by `forget` before it deletes: the user, and
# the session and time bound (epoch seconds) the forget covers (None: any).
ForgetHook = Callable[[str | None, str | None, float | None], Awaitable[Any]]


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
        key, terms = checked_key(user_id), query_terms(check_query("query", query))
        check_id("session_id", session_id)
        blocks = await self._blocks(key)
        facts = await self._search_facts(key, terms, self.limits.facts) if terms else []
        episodes = (
            await self._search_episodes(key, terms, session_id, self.limits.episodes)
            if terms
            else []
        )
        return compose_seed(blocks, facts, episodes, self.limits)

    async def history(self, *, user_id: str | None, session_id: str | None) -> list[Message]:
        """The last `limits.turns` prompt/answer pairs of this user's session, oldest first,
        as many of the newest as fit in `limits.history_chars` (prompts and answers)."""
        key = checked_key(user_id)
        check_id("session_id", session_id)
        if session_id is None or self.limits.turns == 0:
            return []
        recent = await self._recent(key, session_id, self.limits.turns)
        return turns(recent, self.limits.history_chars)

    async def remember(self, episode: Episode) -> bool:
        """Store a finished run (again for the same run id replaces it, so a resume adds
        none); False, storing nothing, when a `forget` covers it or a higher `fence` wrote it.

        A `forget` covers the episode of a run it deleted the episode of, and one it would
        have deleted had it been stored then whose run had started (`started_at`) before the
        forget: an episode a crashed or stalled run ends with, or an owed one, never brings a
        forgotten turn back. A stored episode is replaced only by one of an equal or higher
        `fence` (the writer's lease token), so a writer whose lease was taken over never
        replaces its successor's. Its ids and times are checked first (`MemoryInputError`
        naming the field); its text is stored with NUL and lone surrogates escaped, in NFC
        (`memory.inputs.stored_text`)."""
        if not isinstance(episode, Episode):
            raise TypeError(f"expected an Episode, got {type(episode).__name__}")
        key = checked_key(episode.user_id)
        check_id("session_id", episode.session_id)
        if not isinstance(episode.run_id, str) or not episode.run_id:
            raise MemoryInputError(f"run_id must be a non-empty str, not {episode.run_id!r}")
        check_id("run_id", episode.run_id)
        fence = episode.fence
        if isinstance(fence, bool) or not isinstance(fence, int) or not 0 <= fence <= MAX_LIMIT:
            raise MemoryInputError(
                f"Episode.fence must be a lease token (an int from 0), not {fence!r}"
            )
        for name in ("prompt", "output"):
            if not isinstance(text := getattr(episode, name), str):
                raise MemoryInputError(f"Episode.{name} must be a str, not {type(text).__name__}")
        calls = episode.tool_calls
        if not isinstance(calls, list | tuple) or not all(isinstance(c, str) for c in calls):
            raise MemoryInputError(
                f"Episode.tool_calls must be a list of tool names (str), not {calls!r}"
            )
        started = episode.started_at
        stored = replace(
            episode,
            prompt=stored_text(episode.prompt),
            output=stored_text(episode.output),
            tool_calls=[escaped(c) for c in calls],
            at=check_time("Episode.at", episode.at),
            started_at=None if started is None else check_time("Episode.started_at", started),
        )
        # A backend of before this returned None: stored.
        return await self._remember(key, stored) is not False

    # ------------------------------------------------------------------ episodes

    async def episodes(
        self, user_id: str | None, *, session_id: str | None = None, limit: int | None = None
    ) -> list[Episode]:
        """A user's episodes (of one session, if given), oldest first; `limit` keeps the newest."""
        key, limit = checked_key(user_id), check_limit(limit)
        check_id("session_id", session_id)
        if limit == 0:
            return []
        found = await self._episodes(key, session_id, limit)
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
        key, limit = checked_key(user_id), check_limit(limit)
        terms = query_terms(check_query("query", query))
        check_id("exclude_session", exclude_session)
        limit = self.limits.episodes if limit is None else limit
        if not terms or limit == 0:
            return []
        found = await self._search_episodes(key, terms, exclude_session, limit)
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
        session_id: str | None = None,
    ) -> Fact:
        """Record one fact; one with the same subject and predicate but another object ends.
        `source_run` and `session_id` say which run of which session recorded it, so
        forgetting that session removes it."""
        fact = Fact(subject, predicate, object, confidence, source_run, session_id=session_id)
        return (await self.add_facts(user_id, [fact]))[0]

    async def add_facts(
        self, user_id: str | None, facts: Iterable[Fact], *, source_episode: str | None = None
    ) -> list[Fact]:
        """Record facts in one transaction (all or none), as stored, in order.

        A fact whose (subject, predicate) has a current fact with a different object
        supersedes it: the old row gets `valid_to` and stays. The same object again keeps
        the old row, raising its confidence when the new one is higher.

        With `source_episode` (a run id) the facts are drawn from that episode: they are
        written only while it is stored, checked in the same transaction, so a `forget`
        that deleted it (in any process) is final; otherwise nothing is written and `[]`
        returned.
        """
        key = checked_key(user_id)
        if source_episode is not None and (
            not isinstance(source_episode, str) or not source_episode
        ):
            raise MemoryInputError(f"source_episode must be a run id, not {source_episode!r}")
        check_id("source_episode", source_episode)
        prepared = prepare_facts(user_id, facts, now())
        if not prepared:
            return []
        stored = await self._add_facts(key, prepared, source_episode)
        for fact in stored:
            fact.user_id = user_id
        return stored

    async def facts(
        self, user_id: str | None, *, include_superseded: bool = False, limit: int | None = None
    ) -> list[Fact]:
        """A user's facts, newest first; only current ones unless `include_superseded`."""
        key, limit = checked_key(user_id), check_limit(limit)
        if limit == 0:
            return []
        found = await self._facts(key, include_superseded, limit)
        for fact in found:
            fact.user_id = user_id
        return found

    async def search_facts(
        self, user_id: str | None, query: str, *, limit: int | None = None
    ) -> list[Fact]:
        """The user's current facts matching `query`, best first (newer first on equal rank)."""
        key, limit = checked_key(user_id), check_limit(limit)
        terms = query_terms(check_query("query", query))
        limit = self.limits.facts if limit is None else limit
        if not terms or limit == 0:
            return []
        found = await self._search_facts(key, terms, limit)
        for fact in found:
            fact.user_id = user_id
        return found

    # ------------------------------------------------------------------ working blocks

    async def set_block(self, user_id: str | None, name: str, text: str) -> None:
        """Create or replace one named block of the user's working memory."""
        key = checked_key(user_id)
        if isinstance(text, str):
            text = stored_text(text)
        check_block(name, text, self.limits)
        await self._set_block(key, name.strip(), text, now())

    async def get_blocks(self, user_id: str | None) -> dict[str, str]:
        """The user's working blocks, name → text, in the order they were first set."""
        return {b.name: b.text for b in await self._blocks(checked_key(user_id))}

    async def blocks(self, user_id: str | None) -> list[WorkingBlock]:
        """The user's working blocks with their update times, in the order first set."""
        return await self._blocks(checked_key(user_id))

    async def delete_block(self, user_id: str | None, name: str) -> bool:
        """Remove one block; False when the user had none of that name."""
        key = checked_key(user_id)
        if not isinstance(name, str):  # any str: a name stored before the rules goes too
            raise BlockNameError(name, f"must be a str, not {type(name).__name__}")
        return await self._delete_block(key, name.strip()) > 0

    # ------------------------------------------------------------------ the user's data

    def add_forget_hook(self, hook: ForgetHook) -> None:
        """Have `forget` await `hook(user_id, session_id, before)` first (an Extractor
        cancels the pending work the forget covers there)."""
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
        episodes and the facts its runs recorded or that were extracted from them (working
        blocks stay). With `before`: episodes, facts and blocks recorded before that time.
        Both: the intersection. A deleted fact that had superseded a kept one makes that one
        current again. The pending extractions the forget covers are cancelled first, and
        facts drawn from a deleted episode are never written afterwards. It records what it
        forgot (the runs whose episodes it deleted; its session, bound and time; no text),
        so no later `remember` of what it covers stores it (`remember`).
        """
        key = checked_key(user_id)  # an id refused here cancels nothing of another user
        check_id("session_id", session_id)
        bound = as_time(check_before(before))
        for hook in list(self._forget_hooks):
            await hook(user_id, session_id, bound)
        return await self._forget(key, session_id, bound)

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
            "fact_sources": await self._fact_sources(key),
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
    async def _remember(self, key: str, episode: Episode) -> bool:
        """Store `episode` unless a forget covers it or a higher fence wrote it (`remember`);
        whether it was stored, checked and written in one transaction."""

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
    async def _add_facts(
        self, key: str, facts: list[Fact], source_episode: str | None
    ) -> list[Fact]:
        """Store `facts`; none and `[]` when `source_episode` is given and not stored."""

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

    async def _fact_sources(self, key: str) -> list[dict[str, Any]]:
        """Every run that stated each fact (`memory.chain`): fact_id, session_id,
        source_run, confidence, at; none for a store that keeps only the facts."""
        return []

    @abstractmethod
    async def _counts(self, key: str) -> dict[str, Any]:
        """episodes, sessions, facts, superseded_facts, blocks, first_seen, last_seen."""

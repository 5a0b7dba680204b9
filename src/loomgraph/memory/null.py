"""Memory that keeps nothing, and `InMemoryMemory`: the full memory behaviour in process memory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from loomgraph.memory.base import MemoryStore
from loomgraph.memory.records import (
    Fact,
    MemoryLimits,
    WorkingBlock,
    bm25_rank,
    fact_key,
    same_object,
)
from loomgraph.memory.sql import relinked
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


@dataclass(slots=True)
class _UserData:
    episodes: dict[str, Episode] = field(default_factory=dict)  # by run id, in arrival order
    facts: list[Fact] = field(default_factory=list)
    blocks: dict[str, WorkingBlock] = field(default_factory=dict)  # in the order first set


class InMemoryMemory(MemoryStore):
    """Episodes, facts and blocks in process memory, partitioned by user; for tests and demos.

    Nothing survives the process. Every method runs without awaiting, so each is atomic.
    """

    def __init__(self, max_turns: int = 20, *, limits: MemoryLimits | None = None) -> None:
        super().__init__(limits or MemoryLimits(turns=max_turns))
        self._users: dict[str, _UserData] = {}
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"InMemoryMemory({len(self._users)} users)"

    def _user(self, key: str) -> _UserData:
        return self._users.setdefault(key, _UserData())

    @staticmethod
    def _copy(ep: Episode, key: str) -> Episode:
        return replace(ep, user_id=key or None, tool_calls=list(ep.tool_calls), at=float(ep.at))

    def _ordered(self, key: str) -> list[Episode]:
        data = self._users.get(key)
        # Stable: equal times keep arrival order, as the SQL backends' row ids do.
        return sorted(data.episodes.values(), key=lambda e: e.at) if data else []

    # ------------------------------------------------------------------ episodes

    async def _remember(self, key: str, episode: Episode) -> None:
        self._user(key).episodes[episode.run_id] = self._copy(episode, key)

    async def _recent(self, key: str, session_id: str, limit: int) -> list[Episode]:
        mine = [e for e in self._ordered(key) if e.session_id == session_id]
        return [self._copy(e, key) for e in mine[-limit:]]

    async def _episodes(self, key: str, session_id: str | None, limit: int | None) -> list[Episode]:
        found = [e for e in self._ordered(key) if session_id is None or e.session_id == session_id]
        return [self._copy(e, key) for e in (found[-limit:] if limit is not None else found)]

    async def _search_episodes(
        self, key: str, terms: list[str], exclude_session: str | None, limit: int
    ) -> list[Episode]:
        docs = [
            (f"{e.prompt} {e.output}", e.at, e)
            for e in self._ordered(key)
            if exclude_session is None or e.session_id != exclude_session
        ]
        return [self._copy(e, key) for e in bm25_rank(terms, docs, limit)]

    # ------------------------------------------------------------------ facts

    async def _add_facts(
        self, key: str, facts: list[Fact], source_episode: str | None
    ) -> list[Fact]:
        stored: list[Fact] = []
        if source_episode is not None:
            data = self._users.get(key)
            if data is None or source_episode not in data.episodes:
                return stored  # forgotten since it was read: its facts must not come back
        rows = self._user(key).facts
        for fact in facts:
            k = fact_key(fact)
            old = next((f for f in rows if f.current and fact_key(f) == k), None)
            if old is not None and same_object(old.object, fact.object):
                old.confidence = max(old.confidence, fact.confidence)
                stored.append(replace(old))
                continue
            if old is not None:
                old.valid_to = fact.valid_from
            new = replace(fact, id=next(self._ids))
            rows.append(new)
            stored.append(replace(new))
        return stored

    async def _facts(self, key: str, include_superseded: bool, limit: int | None) -> list[Fact]:
        data = self._users.get(key)
        found = [
            replace(f)
            for f in reversed(data.facts if data else [])
            if include_superseded or f.current
        ]
        found.sort(key=lambda f: -f.valid_from)
        return found[:limit] if limit is not None else found

    async def _search_facts(self, key: str, terms: list[str], limit: int) -> list[Fact]:
        data = self._users.get(key)
        docs = [(f.text(), f.valid_from, f) for f in (data.facts if data else []) if f.current]
        return [replace(f) for f in bm25_rank(terms, docs, limit)]

    # ------------------------------------------------------------------ blocks

    async def _set_block(self, key: str, name: str, text: str, at: float) -> None:
        blocks = self._user(key).blocks
        if name in blocks:
            blocks[name].text, blocks[name].updated_at = text, at
        else:
            blocks[name] = WorkingBlock(name, text, at)

    async def _blocks(self, key: str) -> list[WorkingBlock]:
        data = self._users.get(key)
        return [replace(b) for b in (data.blocks.values() if data else ())]

    async def _delete_block(self, key: str, name: str) -> int:
        data = self._users.get(key)
        return 1 if data and data.blocks.pop(name, None) else 0

    # ------------------------------------------------------------------ the user's data

    async def _forget(self, key: str, session_id: str | None, before: float | None) -> int:
        data = self._users.get(key)
        if data is None:
            return 0

        def old(at: float) -> bool:
            return before is None or at < before

        gone = {
            r
            for r, e in data.episodes.items()
            if (session_id is None or e.session_id == session_id) and old(e.at)
        }
        if session_id is not None:
            facts = [
                f
                for f in data.facts
                if f.source_run in gone or (f.session_id == session_id and old(f.valid_from))
            ]
            blocks: list[str] = []
        else:
            facts = [f for f in data.facts if old(f.valid_from)]
            blocks = [n for n, b in data.blocks.items() if old(b.updated_at)]
        for run_id in gone:
            del data.episodes[run_id]
        ids = {id(f) for f in facts}
        data.facts = [f for f in data.facts if id(f) not in ids]
        for k in {fact_key(f) for f in facts}:  # a kept fact a deleted one had superseded
            chain = [f for f in data.facts if fact_key(f) == k]  # in the order written
            by_id = {f.id: f for f in chain}
            for fact_id, valid_to in relinked(
                [(f.id or 0, f.valid_from, f.valid_to) for f in chain]
            ):
                by_id[fact_id].valid_to = valid_to
        for name in blocks:
            del data.blocks[name]
        if not (data.episodes or data.facts or data.blocks):
            del self._users[key]
        return len(gone) + len(facts) + len(blocks)

    async def _counts(self, key: str) -> dict[str, Any]:
        data = self._users.get(key) or _UserData()
        times = [e.at for e in data.episodes.values()]
        current = sum(1 for f in data.facts if f.current)
        return {
            "episodes": len(times),
            "sessions": len({e.session_id for e in data.episodes.values()} - {None}),
            "facts": current,
            "superseded_facts": len(data.facts) - current,
            "blocks": len(data.blocks),
            "first_seen": min(times) if times else None,
            "last_seen": max(times) if times else None,
        }

"""`InMemoryMemory`: episodes, facts and working blocks kept in process memory."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from loomgraph.memory.base import MemoryStore
from loomgraph.memory.chain import Statement, merged, place, relinked, summary
from loomgraph.memory.ranking import bm25_rank
from loomgraph.memory.records import Fact, MemoryLimits, WorkingBlock, fact_key, now
from loomgraph.protocols import Episode


@dataclass(slots=True, frozen=True)
class _Forgot:
    """One `forget`, as the SQL backends' `memory_forgotten` row without a run id."""

    session_id: str | None  # None: every session
    older_than: float | None  # its `before`
    at: float  # when it was made

    def covers(self, ep: Episode) -> bool:
        """Whether it would have deleted `ep` had it been stored then (its run had started)."""
        return (
            (self.session_id is None or self.session_id == ep.session_id)
            and ep.started_at is not None
            and ep.started_at < self.at
            and (self.older_than is None or ep.at < self.older_than)
        )

    def within(self, other: _Forgot) -> bool:
        """Whether `other`, made later, covers all this one does (this one can go)."""
        return (
            self.at <= other.at
            and other.session_id in (None, self.session_id)
            and (
                other.older_than is None
                or (self.older_than is not None and self.older_than <= other.older_than)
            )
        )


@dataclass(slots=True)
class _UserData:
    episodes: dict[str, Episode] = field(default_factory=dict)  # by run id, in arrival order
    facts: list[Fact] = field(default_factory=list)  # in the order written (by id)
    sources: dict[int, list[Statement]] = field(default_factory=dict)  # by fact id
    blocks: dict[str, WorkingBlock] = field(default_factory=dict)  # in the order first set
    forgotten_runs: set[str] = field(default_factory=set)  # whose episodes a forget deleted
    forgets: list[_Forgot] = field(default_factory=list)


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

    async def _remember(self, key: str, episode: Episode) -> bool:
        data = self._user(key)
        if episode.run_id in data.forgotten_runs:
            return False
        old = data.episodes.get(episode.run_id)
        if old is None and any(f.covers(episode) for f in data.forgets):
            return False
        if old is not None and old.fence > episode.fence:
            return False  # a newer holder of the run's lease wrote it
        data.episodes[episode.run_id] = self._copy(episode, key)
        return True

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
        if source_episode is not None:
            data = self._users.get(key)
            if data is None or source_episode not in data.episodes:
                return []  # forgotten since it was read: its facts must not come back
        data = self._user(key)
        touched: list[Fact] = []
        for fact in facts:
            k = fact_key(fact)
            chain = [f for f in data.facts if fact_key(f) == k]
            said = Statement(fact.session_id, fact.source_run, fact.confidence, fact.valid_from)
            row_id = place(
                [(f.id or 0, f.object, f.valid_from) for f in chain], fact.object, fact.valid_from
            )
            if row_id is None:
                row = replace(fact, id=next(self._ids), valid_to=fact.valid_from)
                data.facts.append(row)
                chain.append(row)
            else:
                row = next(f for f in chain if f.id == row_id)
            self._state(data, row, merged(data.sources.get(row.id or 0, []), said))
            _relink(chain)
            touched.append(row)
        return [replace(f) for f in touched]  # as stored, after the whole batch

    @staticmethod
    def _state(data: _UserData, row: Fact, statements: list[Statement]) -> None:
        data.sources[row.id or 0] = statements
        row.confidence, row.session_id, row.source_run, row.valid_from = summary(statements)

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
        # Kept even for a user with nothing stored: an episode owed, or of a run under way,
        # may come later (`remember`).
        data = self._user(key)
        forgot = _Forgot(session_id, before, now())
        data.forgets = [f for f in data.forgets if not f.within(forgot)] + [forgot]

        def old(at: float) -> bool:
            return before is None or at < before

        gone = {
            r
            for r, e in data.episodes.items()
            if (session_id is None or e.session_id == session_id) and old(e.at)
        }

        def unsaid(s: Statement) -> bool:  # what the forget covers, as SqlMemory's `gone`
            if session_id is None:
                return old(s.at)
            return s.source_run in gone or (s.session_id == session_id and old(s.at))

        deleted, keys = 0, set[str]()
        for row in list(data.facts):
            said = data.sources.get(row.id or 0, [])
            left = [s for s in said if not unsaid(s)]
            if len(left) == len(said):
                continue
            keys.add(fact_key(row))
            if left:
                self._state(data, row, left)
            else:
                data.facts.remove(row)
                del data.sources[row.id or 0]
                deleted += 1
        for k in keys:  # a kept fact a deleted one had superseded
            _relink([f for f in data.facts if fact_key(f) == k])
        blocks = (
            []
            if session_id is not None
            else [n for n, b in data.blocks.items() if old(b.updated_at)]
        )
        for run_id in gone:
            del data.episodes[run_id]
        data.forgotten_runs |= gone
        for name in blocks:
            del data.blocks[name]
        return len(gone) + deleted + len(blocks)

    async def _fact_sources(self, key: str) -> list[dict[str, Any]]:
        data = self._users.get(key) or _UserData()
        return [
            {"fact_id": fact_id, **asdict(s)}
            for fact_id, said in data.sources.items()
            for s in said
        ]

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


def _relink(chain: list[Fact]) -> None:
    """Mend one subject and predicate's chain (`chain.relinked`)."""
    by_id = {f.id: f for f in chain}
    for fact_id, valid_to in relinked([(f.id or 0, f.valid_from, f.valid_to) for f in chain]):
        by_id[fact_id].valid_to = valid_to

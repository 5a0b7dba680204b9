"""Long-term memory: episodes of finished runs, and the protocol that keeps them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from loomgraph.protocols.messages import Message

__all__ = ["Episode", "Memory", "Seed"]


@dataclass(slots=True)
class Episode:
    """One finished run, as memory keeps it.

    `started_at` (when its run started, epoch seconds; None: not known) and `fence` (the
    fencing token of the writer's lease on the run; 0 without leases) say whether it may
    still be written: a `forget` made after its run started covers it, and a lower `fence`
    never replaces a higher one's episode (`MemoryStore.remember`).
    """

    user_id: str | None
    session_id: str | None
    run_id: str
    prompt: str
    output: str
    tool_calls: list[str] = field(default_factory=list)
    # When the run ended; made without one, now (it was 0.0: the seed showed 1970-01-01).
    at: float = field(default_factory=time.time)
    started_at: float | None = None
    fence: int = 0


class Seed(str):
    """A seed's text, and the parts of it that earlier runs' answers wrote: untrusted text
    in the run it prompts, as they may quote what those runs' tools returned. A plain `str`
    seed has none."""

    untrusted: tuple[str, ...]

    def __new__(cls, text: str, untrusted: tuple[str, ...] = ()) -> Seed:
        made = super().__new__(cls, text)
        made.untrusted = untrusted
        return made


@runtime_checkable
class Memory(Protocol):
    """Long-term memory, partitioned by user."""

    async def seed(self, *, user_id: str | None, session_id: str | None, query: str) -> str:
        """Text to add to the system prompt at the start of a run ('' for nothing); a `Seed`
        names the parts of it that are untrusted."""
        ...

    async def history(self, *, user_id: str | None, session_id: str | None) -> list[Message]:
        """The earlier turns of this session, oldest first."""
        ...

    async def remember(self, episode: Episode) -> bool | None:
        """Store a finished run; False when the store refused it (a `forget` covers it, or a
        writer with a higher `fence` stored its episode), None or True otherwise."""
        ...

    async def close(self) -> None:
        """Release connections; the next use opens them again."""
        ...

"""What memory stores (facts, working blocks), its limits, and the text logic every backend shares.

The backends differ only in where rows live and how full-text ranking is computed; the
query terms, fact validation, supersession rule and history shape are here, and the seed's
layout in `memory.seed`, so the three behave the same.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from loomgraph.memory.errors import BlockNameError, MemoryInputError, UserIdError
from loomgraph.memory.inputs import check_id, stored_text
from loomgraph.memory.ranking import bm25_rank, query_terms
from loomgraph.protocols import Episode, Message
from loomgraph.protocols.stored_text import id_length_problem

MAX_FIELD_CHARS = 1000  # one subject, predicate or object
MAX_NAME_CHARS = 64  # one working block name

# A block name is shown in every prompt of its user (`[name]` in the seed): letters, digits,
# `_`, `-`, `.` and spaces only, so no name can end a line, a bracket or the seed's frame.
BLOCK_NAME = re.compile(r"[\w .\-]+")


@dataclass(slots=True)
class Fact:
    """A subject-predicate-object statement about a user, valid from a time until superseded."""

    subject: str
    predicate: str
    object: str
    confidence: float = 1.0
    source_run: str | None = None
    valid_from: float = 0.0  # 0: the time it is stored
    valid_to: float | None = None  # set when a newer fact with another object replaces it
    user_id: str | None = None
    id: int | None = None
    session_id: str | None = None  # the session of the run that recorded it, when known

    @property
    def current(self) -> bool:
        """True while no newer fact has superseded this one."""
        return self.valid_to is None

    def text(self) -> str:
        """The statement as one line of plain text."""
        return f"{self.subject} {self.predicate} {self.object}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data."""
        return asdict(self)


@dataclass(slots=True)
class WorkingBlock:
    """A named text block pinned into every prompt of one user (persona, preferences, …)."""

    name: str
    text: str
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """How much memory goes into a run: by count and by characters."""

    turns: int = 20  # prompt/answer pairs of this session that `history` returns
    facts: int = 10  # current facts in the seed
    episodes: int = 3  # past episodes of other sessions in the seed
    seed_chars: int = 4000  # the whole seed text
    episode_chars: int = 600  # one episode in the seed
    block_chars: int = 2000  # one working block; `set_block` refuses longer text
    history_chars: int = 50_000  # prompts and answers `history` returns, newest turns first

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"MemoryLimits.{name} must be a non-negative int, not {value!r}")


# --------------------------------------------------------------------------- identity


def user_key(user_id: str | None) -> str:
    """The partition a user id maps to: None (an anonymous run) is the partition ''."""
    if user_id is not None and not isinstance(user_id, str):
        raise UserIdError(user_id, f"must be a str or None, not {type(user_id).__name__}")
    return user_id or ""


def checked_key(user_id: str | None) -> str:
    """`user_key` of a user id every backend can store as its own partition: `''` is refused
    (it would share the anonymous user's partition), as are NUL and lone surrogates (no
    backend stores them alike: SQLite cannot encode a surrogate, Postgres refuses both) and
    an id too long to index (`id_length_problem`; the journals refuse it too)."""
    key = user_key(user_id)
    if user_id is None:
        return key
    if user_id == "":
        raise UserIdError(user_id, "is empty: pass None for an anonymous run, or a real user id")
    if "\x00" in user_id:
        raise UserIdError(user_id, "contains a NUL character")
    if (too_long := id_length_problem(user_id)) is not None:
        raise UserIdError(user_id, f"is {too_long}")
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise UserIdError(user_id, "is not valid Unicode text (a lone surrogate)") from None
    return key


def as_time(value: float | datetime | None) -> float | None:
    """Epoch seconds from a float or a datetime (naive ones are taken as UTC)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# --------------------------------------------------------------------------- validation


def _clean(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"fact {what} must be a non-empty string, not {value!r}")
    text = " ".join(stored_text(value).split())
    if len(text) > MAX_FIELD_CHARS:
        raise ValueError(f"fact {what} is longer than {MAX_FIELD_CHARS} characters")
    return text


def prepare_facts(user_id: str | None, facts: Iterable[Fact], now: float) -> list[Fact]:
    """Checked copies stamped with the user and a start time; raises before any write."""
    prepared = []
    for fact in facts:
        if not isinstance(fact, Fact):
            raise TypeError(f"expected a Fact, got {type(fact).__name__}")
        confidence = fact.confidence
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0.0 <= confidence <= 1.0
        ):
            raise ValueError(f"fact confidence must be a number in [0, 1], not {confidence!r}")
        check_id("source_run", fact.source_run)
        check_id("session_id", fact.session_id)
        if fact.valid_from and not (
            isinstance(fact.valid_from, int | float) and math.isfinite(fact.valid_from)
        ):
            raise MemoryInputError(
                f"fact valid_from must be finite epoch seconds, not {fact.valid_from!r}"
            )
        prepared.append(
            replace(
                fact,
                subject=_clean(fact.subject, "subject"),
                predicate=_clean(fact.predicate, "predicate"),
                object=_clean(fact.object, "object"),
                confidence=float(confidence),
                user_id=user_id,
                valid_from=fact.valid_from or now,
                valid_to=None,
                id=None,
            )
        )
    return prepared


def fact_key(fact: Fact) -> str:
    """What makes two facts about the same thing: subject and predicate, case-insensitive."""
    return f"{fact.subject.casefold()}\x1f{fact.predicate.casefold()}"


def same_object(a: str, b: str) -> bool:
    """Whether two objects say the same (then the old fact stays, with the higher confidence)."""
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def check_block(name: Any, text: Any, limits: MemoryLimits) -> None:
    """Refuse a block name or text that would not fit a prompt (`BlockNameError` for a name)."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_CHARS:
        raise BlockNameError(name, f"must be 1-{MAX_NAME_CHARS} characters")
    if BLOCK_NAME.fullmatch(name.strip()) is None:
        raise BlockNameError(
            name, "may hold only letters, digits, spaces and '_', '-', '.' characters"
        )
    if not isinstance(text, str):
        raise TypeError(f"block text must be a str, not {type(text).__name__}")
    if len(text) > limits.block_chars:
        raise ValueError(
            f"block {name!r} is {len(text)} characters; the limit is "
            f"{limits.block_chars} (MemoryLimits.block_chars)"
        )


# --------------------------------------------------------------------------- output shapes


def turns(episodes: Iterable[Episode], chars: int | None = None) -> list[Message]:
    """Episodes as the conversation they were: each prompt, then its answer; with `chars`,
    only the newest whole turns whose prompts and answers fit in that many characters."""
    kept = list(episodes)
    if chars is not None:
        used, start = 0, len(kept)
        while start > 0 and used + _size(kept[start - 1]) <= chars:
            start -= 1
            used += _size(kept[start])
        kept = kept[start:]  # a turn cut short would misquote the conversation
    messages: list[Message] = []
    for ep in kept:
        messages += [
            {"role": "user", "content": ep.prompt},
            {"role": "assistant", "content": ep.output},
        ]
    return messages


def _size(ep: Episode) -> int:
    return len(ep.prompt) + len(ep.output)


def episode_dict(ep: Episode) -> dict[str, Any]:
    """An episode as JSON-shaped data."""
    return {
        "session_id": ep.session_id,
        "run_id": ep.run_id,
        "prompt": ep.prompt,
        "output": ep.output,
        "tool_calls": list(ep.tool_calls),
        "at": ep.at,
    }


def now() -> float:
    """The current time in epoch seconds."""
    return time.time()


__all__ = [
    "Fact",
    "MemoryLimits",
    "WorkingBlock",
    "as_time",
    "bm25_rank",
    "check_block",
    "checked_key",
    "episode_dict",
    "fact_key",
    "prepare_facts",
    "query_terms",
    "same_object",
    "turns",
    "user_key",
]

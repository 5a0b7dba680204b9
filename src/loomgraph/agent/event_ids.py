"""The stable ids of a run's journaled events (`agent.run_events`), their text form and order.

An event of transition `seq` is `"seq.index"`; `run_started` is `0.0`; a bare `"seq"` means
after every event of transition `seq`. A stop (`run_completed`) after transition `seq` is
`"seq.end.K"` or `"seq.end.K.R"`: `K` how many times the run's node visits had begun an
effect (`run_events.stop_mark`), `R` the rank of the stop's status (`StopRank`), written
only when it is not 0 (a waiting or completed stop's id is as servers before ranks wrote it).

A run may stop again with no transition in between. A stop that began an effect more has a
larger `K`. One that began none (a waiting run cancelled, a failed one given up on, a
cancelled one resumed that asks the same question again) has another rank, unless its
status ranks as the one before did (a failed run resumed that fails again before any
effect): then the two stops share an id, and a client holding it is not told of the later.
The ranks go up along the moves a run makes with no effect begun but by a resume by hand
(waiting, failed, cancelled, dead letter, cut off by a cap), so those ids sort after the
earlier stop's; a stop of a lower rank comes only from a resume by hand of a failed,
cancelled or dead-lettered run, and is given to a client holding the earlier stop all the
same (`EventId.is_new_after`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import RunStatus

__all__ = ["BadEventId", "EventId", "StopRank", "stop_rank"]

# The index of the event a stop makes, and of a bare `SEQ` (after every event of transition
# `SEQ`, before its stop): above any index a transition's events reach, so ids sort as fields.
_END = 1 << 31
_AFTER_SEQ = 1 << 30
# SEQ, SEQ.INDEX, SEQ.end.K, SEQ.end.K.R and SEQ.end (what a stop's id was before K: K is
# then 0). Bounded: `int` refuses over 4300 digits with a plain ValueError.
_EVENT_ID = re.compile(
    r"([0-9]{1,30})(?:\.([0-9]{1,30})|\.end(?:\.([0-9]{1,30})(?:\.([0-9]{1,30}))?)?)?"
)


class StopRank(enum.IntEnum):
    """Where a stop's status stands among those a run moves through with no effect begun
    and no transition journaled: failed (a resume that fails first), cancelled (a cancel
    of a waiting or failed run), a dead letter (a failed or cancelled run resumed once too
    often), cut off by a cap. Only a resume by hand goes back down."""

    # awaiting_approval, interrupted, completed: reached only by beginning an effect (the
    # request asked) or journaling a transition (the last node's), but by a resume by hand,
    # so not told apart from the stop before by a rank; written as before ranks.
    PLAIN = 0
    FAILED = 1
    CANCELLED = 2
    DEAD_LETTER = 3
    CUT_OFF = 4  # limit_reached, budget_exhausted


_RANKS = {
    RunStatus.FAILED: StopRank.FAILED,
    RunStatus.CANCELLED: StopRank.CANCELLED,
    RunStatus.DEAD_LETTER: StopRank.DEAD_LETTER,
    RunStatus.LIMIT_REACHED: StopRank.CUT_OFF,
    RunStatus.BUDGET_EXHAUSTED: StopRank.CUT_OFF,
}


def stop_rank(status: RunStatus) -> StopRank:
    """The rank of a stop with `status` (`R` of its id `seq.end.k.r`)."""
    return _RANKS.get(status, StopRank.PLAIN)


class BadEventId(LoomgraphError, ValueError):
    """An event id that is not `seq.index`, `seq.end.k`, `seq.end.k.r` (or `seq.end`, or
    `seq`)."""


@dataclass(frozen=True, slots=True, order=True)
class EventId:
    """Where one journaled event stands: the transition it belongs to and its place there;
    ids compare in the order of the events.

    The stop event after the transition `seq` has `index` `_END` (`is_stop`), `stop` the
    number of times the run's node visits had begun an effect (`stop_mark`) and `rank` its
    status's `StopRank`: two stops after the same transition are told apart and ordered by
    them, `stop` first."""

    seq: int
    index: int
    stop: int = 0
    rank: int = 0  # a `StopRank`, or a larger number a client sent (after every rank)

    @classmethod
    def of_stop(cls, seq: int, stop: int, status: RunStatus) -> EventId:
        """The id of the stop event after transition `seq`, `stop` effects begun, the run
        stopped with `status`."""
        return cls(seq, _END, stop, stop_rank(status))

    @property
    def is_stop(self) -> bool:
        """Whether this is a stop event's id (`seq.end.k`, `seq.end.k.r`)."""
        return self.index == _END

    def __str__(self) -> str:
        if self.is_stop:
            # Rank 0 unwritten: a waiting stop keeps the id servers before ranks gave it.
            rank = f".{self.rank}" if self.rank else ""
            return f"{self.seq}.end.{self.stop}{rank}"
        return str(self.seq) if self.index == _AFTER_SEQ else f"{self.seq}.{self.index}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        """An id from its text form; a bare number `N` means "after every event of N" (its
        stop excepted). `N.end.K` is rank 0, as written, and as an earlier server wrote every
        stop's id: a client holding one for a cancelled or failed stop is given that stop
        once more, never misses one made since; `N.end`, from a server before `K`, is read
        as `N.end.0` alike. Only ASCII digits, as for every number the server reads: `int`
        would take `-1`, `+1`, `1_0` and other scripts' digits, and `-1` would replay the run."""
        found = _EVENT_ID.fullmatch(text)
        if found is None:
            raise BadEventId(
                f"event id {text!r} is not 'SEQ.INDEX', 'SEQ.end.K', 'SEQ.end.K.R', 'SEQ.end' "
                f"or a sequence number (ASCII digits)"
            )
        seq, index, stop, rank = found.group(1, 2, 3, 4)
        if index is not None:
            # A larger index than any event's is "after every event of SEQ", as a bare SEQ.
            return cls(int(seq), min(int(index), _AFTER_SEQ))
        if text.endswith(".end") or stop is not None:
            return cls(int(seq), _END, int(stop or 0), int(rank or 0))
        return cls(int(seq), _AFTER_SEQ)

    def comes_after(self, other: EventId | None) -> bool:
        """True when this event follows `other` in the run (every event follows None)."""
        return other is None or self > other

    def is_new_after(self, held: EventId | None) -> bool:
        """Whether a client holding `held` has not been given this event, the run's newest:
        it comes after `held`, or it is a stop after the same transition and effect count as
        the stop `held` but of another rank. The run made that stop after `held`'s whatever
        the order of their ranks (it can be at one stop at a time, and `held` was the stop
        it was at), so it is given even when a resume by hand went down in rank."""
        if self.comes_after(held):
            return True
        return (
            held is not None
            and self.is_stop
            and held.is_stop
            and (self.seq, self.stop) == (held.seq, held.stop)
            and self.rank != held.rank
        )

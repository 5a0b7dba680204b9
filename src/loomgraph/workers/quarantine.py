"""Recoveries run alone: a run that crashed its worker once may do it again (a poison run),
and every run beside it would die with it and count a failed recovery of its own. So a
worker advances a crashed run only while no other run is in its hands, and starts no other
run meanwhile: a poison run takes its neighbours down at most once, on its first try.

Nothing waits here. A job that cannot go in now is put back in the queue by its worker, so
that a worker that is free takes it (a job waiting inside a busy worker would be held there,
picked, while other workers sit idle). A recovery turned away because runs are in hand
keeps new ordinary runs out of this worker for `hold_seconds` (renewed each time it is
turned away): the runs in hand end, and the recovery, coming back, finds the worker empty
unless another worker ran it first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

__all__ = ["Quarantine"]


class Quarantine:
    """Many ordinary runs at once, or one recovery alone; a recovery turned away goes first."""

    def __init__(self, hold_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_seconds = hold_seconds
        self._clock = clock  # this host's monotonic clock: only spans of this process
        self._shared = 0
        self._alone = False
        self._held_until = 0.0  # until then this worker is kept for a recovery

    @property
    def held(self) -> bool:
        """True while a recovery turned away keeps new ordinary runs out."""
        return self._clock() < self._held_until

    @contextlib.contextmanager
    def shared(self) -> Iterator[bool]:
        """Around an ordinary run: yields True when it may go on (and counts it while the
        block runs), False when a recovery runs here or keeps this worker for itself."""
        if self._alone or self.held:
            yield False
            return
        self._shared += 1
        try:
            yield True
        finally:
            self._shared -= 1

    @contextlib.contextmanager
    def alone(self) -> Iterator[bool]:
        """Around a recovery: yields True when no other run is in this worker's hands (and
        keeps every other out while the block runs), False otherwise; a recovery turned
        away keeps new ordinary runs out for `hold_seconds`, so this worker empties."""
        if self._alone or self._shared:
            self._held_until = self._clock() + self.hold_seconds
            yield False
            return
        self._alone = True
        self._held_until = 0.0
        try:
            yield True
        finally:
            self._alone = False

"""The approval desk's clock for tests of approval deadlines: `time.time` as the modules that
check deadlines read it (`agent.answers`: an answer given to a resume, and when it was
given, `given_now`;
`engine.approvals`: the tool gate; `workers.expiry`: a fleet worker's look for expired
requests), moved on by a test (a slow person, a slow queue), never
slept on.

A server in another process follows a file instead (`follow_file`): the test writes the
offset there.

Usage in a test module (the assignment keeps ruff from reporting the fixture parameter as a
redefinition):

    import desk_clock

    clock = desk_clock.clock

    async def test_x(clock: type[desk_clock.Clock]) -> None:
        clock.offset += 3600
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loomgraph.agent import answers
from loomgraph.engine import approvals
from loomgraph.workers import expiry

# The modules that read the time a request's deadline is set and checked by.
_READERS = (answers, approvals, expiry)


class Clock:
    """`time.time()` plus `offset` seconds."""

    offset = 0.0

    @classmethod
    def time(cls) -> float:
        return time.time() + cls.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Clock]]:
    """The desk's clock, at the real time until a test moves it on."""
    Clock.offset = 0.0
    for module in _READERS:
        monkeypatch.setattr(module, "time", Clock)
    yield Clock


class FileClock:
    """`time.time()` plus the seconds the file at `path` holds (none: 0), read at every look."""

    path = ""

    @classmethod
    def time(cls) -> float:
        held = Path(cls.path).read_text().strip() if Path(cls.path).exists() else ""
        return time.time() + float(held or 0)


def follow_file(path: str) -> None:
    """Make this process's desk clock `FileClock`, following the file at `path`."""
    FileClock.path = path
    for module in _READERS:
        module.time = FileClock  # type: ignore[attr-defined]

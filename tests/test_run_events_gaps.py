"""A follower of a run's journal (`agent.events`, the server's SSE) loses no transition that
commits after a later one (concurrent writers: seq N+1 visible before seq N), gives none
twice, and is not held up for ever by a seq that never comes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph.agent import run_events
from loomgraph.agent.run_events import GAP_READS, follow_events, journal_events
from loomgraph.protocols import RunRecord, RunStart, RunStatus, Transition, Usage
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema

RUN = "r1"


def _transition(seq: int) -> Transition:
    node = "model" if seq % 2 else "tools"
    return Transition(RUN, seq, node, (seq + 1) // 2, {"n": seq}, "next", Usage(), time.time())


async def _started(runtime: Any) -> Any:
    await runtime.start_run(RunRecord(RUN, "g", "h", None, None, initial=RunStart({"i": "go"})))
    return runtime


def _script(runtime: Any, *steps: list[int] | str) -> tuple[Any, list[int]]:
    """A `changed` that writes the next step's transitions (in the order given), or ends
    the run ("end"), at each wake; and the list of wakes it was called for."""
    wakes: list[int] = []

    async def changed(run_id: str, timeout: float) -> None:
        wakes.append(len(wakes))
        if len(wakes) > len(steps):
            return  # nothing more happens: the follower reads again, with nothing new
        step = steps[len(wakes) - 1]
        if step == "end":
            await runtime.finish_run(RUN, RunStatus.COMPLETED, "", {"output": "ok"})
            return
        for seq in step:
            await runtime.append_transition(_transition(int(seq)))

    return changed, wakes


async def _full(runtime: Any) -> list[tuple[str, str]]:
    record = await runtime.load_run(RUN)
    got = journal_events(record, await runtime.transitions(RUN), await runtime.effects(RUN))
    return [(str(e.id), e.event.kind) for e in got]


async def _follow(runtime: Any, changed: Any) -> list[tuple[str, str]]:
    async def go() -> list[tuple[str, str]]:
        return [
            (str(e.id), e.event.kind) async for e in follow_events(runtime, RUN, changed=changed)
        ]

    return await asyncio.wait_for(go(), 30)


async def _late_commit(runtime: Any) -> None:
    """Seq 4 and 6 are journaled (visible) before 3 and 5, as two connections may commit."""
    changed, _ = _script(runtime, [1, 2], [4], [3, 6], [5, 7], "end")
    followed = await _follow(runtime, changed)
    assert followed == await _full(runtime)  # every event, once, in id order
    assert followed[-1] == ("7.end.0", "run_completed")  # no effects begun: k 0
    assert [i for i, k in followed if k == "node_started"] == [f"{s}.0" for s in range(1, 8)]


async def test_a_transition_committed_after_a_later_one_is_not_lost(tmp_path: Path) -> None:
    runtime = await _started(SqliteRuntime(tmp_path / "j.db"))
    try:
        await _late_commit(runtime)
    finally:
        await runtime.close()


@pytest.mark.postgres
async def test_a_transition_committed_after_a_later_one_is_not_lost_on_postgres(
    pg_schema: str,
) -> None:
    runtime = await _started(PostgresRuntime(pg.postgres_dsn(), schema=pg_schema))
    try:
        await _late_commit(runtime)
    finally:
        await runtime.close()


async def test_a_seq_that_never_comes_holds_a_live_run_for_a_bounded_number_of_reads() -> None:
    runtime = await _started(InMemoryRuntime())
    # Seq 3 is never journaled; the run goes on, then rests (still running), then ends.
    changed, wakes = _script(runtime, [1, 2, 4], [5], *[[]] * (GAP_READS + 2), "end")
    given: dict[str, int] = {}  # when each event was given: after how many wakes

    async def go() -> None:
        # No time floor (poll_interval 0): the bound is GAP_READS reads.
        async for e in follow_events(runtime, RUN, changed=changed, poll_interval=0.0):
            given[str(e.id)] = len(wakes)

    await asyncio.wait_for(go(), 30)
    assert list(given) == [i for i, _ in await _full(runtime)]
    firsts = [i for i in given if i.endswith(".0") and ".end" not in i]
    assert firsts == ["0.0", "1.0", "2.0", "4.0", "5.0"]
    # Seq 4 was journaled at the first wake; held while 3 might still come, for at most
    # GAP_READS reads (one a wake), and given before the run ended.
    assert given["2.0"] == 1
    assert 1 < given["4.0"] <= 1 + GAP_READS < given["5.end.0"]


async def test_a_seq_missing_when_the_run_has_ended_does_not_hold_the_follower() -> None:
    runtime = await _started(InMemoryRuntime())
    for seq in (1, 2, 4):
        await runtime.append_transition(_transition(seq))
    await runtime.finish_run(RUN, RunStatus.COMPLETED, "", {"output": "ok"})
    changed, wakes = _script(runtime)
    followed = await _follow(runtime, changed)
    assert followed == await _full(runtime)
    assert followed[-1] == ("4.end.0", "run_completed")
    assert wakes == []  # one read: an ended run's journal is complete


async def test_a_reconnect_after_the_late_transition_gets_the_rest_once(tmp_path: Path) -> None:
    runtime = await _started(SqliteRuntime(tmp_path / "j.db"))
    changed, _ = _script(runtime, [1, 3], [2, 4], "end")
    first = [e async for e in follow_events(runtime, RUN, changed=changed)]
    assert [(str(e.id), e.event.kind) for e in first] == await _full(runtime)
    again = [e async for e in follow_events(runtime, RUN, after=first[4].id)]
    assert [e.id for e in again] == [e.id for e in first[5:]]
    await runtime.close()


async def test_wakes_faster_than_a_slow_commit_do_not_give_the_seq_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many quick wakes (a busy run's) while no time passes: seq 3, committed late, is
    still given, in its place."""
    monkeypatch.setattr(run_events, "_clock", lambda: 100.0)
    runtime = await _started(SqliteRuntime(tmp_path / "j.db"))
    quiet: list[list[int]] = [[]] * (3 * GAP_READS)
    changed, _ = _script(runtime, [1, 2, 4], *quiet, [3, 5], "end")
    try:
        followed = await _follow(runtime, changed)
        assert followed == await _full(runtime)
        assert [i for i, k in followed if k == "node_started"] == [f"{s}.0" for s in range(1, 6)]
    finally:
        await runtime.close()

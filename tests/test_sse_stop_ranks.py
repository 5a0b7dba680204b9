"""A run that stops again with no effect begun since its last stop (a waiting run cancelled,
a failed one given up on, a cancelled one resumed by hand): the later stop's id has another
rank (`seq.end.k.r`), so a client holding the earlier id is given the later stop, on a
reconnect and while following live; only a stop of the same rank shares the id."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.agent.event_ids import BadEventId, EventId, StopRank, stop_rank
from loomgraph.agent.leases import hold_lease
from loomgraph.agent.run_events import JournalEvent, follow_events, journal_events
from loomgraph.agent.submitting import cancel_idle
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.protocols import EffectRecord, EffectStatus, RunRecord, RunStatus
from loomgraph.runtime import SqliteRuntime
from serve_agent import make_agent
from serve_process import sse_events
from test_serve_requests_strict import serving


async def waiting_run(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    """A run waiting for the approval of its `pay` call: its id."""
    started = await client.post("/v1/runs", json={"input": "pay"}, headers=auth)
    assert started.status_code == 201, started.text
    run_id: str = started.json()["run_id"]
    shown = (await client.get(f"/v1/runs/{run_id}", headers=auth)).json()
    assert shown["status"] == "awaiting_approval", shown
    return run_id


async def _stop(agent: Agent, run_id: str) -> JournalEvent:
    """The stop event of the run as the journal has it now."""
    runtime = agent.deps.runtime
    record = await runtime.load_run(run_id)
    assert record is not None and not record.status.in_progress
    transitions, effects = await runtime.transitions(run_id), await runtime.effects(run_id)
    return journal_events(record, transitions, effects)[-1]


async def test_a_client_holding_the_waiting_stop_hears_that_the_run_was_cancelled(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (_, client, auth):
        run_id = await waiting_run(client, auth)
        events = f"/v1/runs/{run_id}/events"
        async with client.stream("GET", events, headers=auth) as stream:
            first = [e async for e in sse_events(stream)]
        stop = first[-1]
        assert stop.event == "run_completed" and stop.id is not None, stop
        cancelled = await client.post(f"/v1/runs/{run_id}/cancel", headers=auth)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        # The client reconnects as EventSource does, with the last id it was given.
        async with client.stream("GET", events, headers=auth | {"Last-Event-ID": stop.id}) as s:
            later = [e async for e in sse_events(s)]
        async with client.stream("GET", events, headers=auth) as stream:
            replay = [e async for e in sse_events(stream)]
        assert [e.event for e in later] == ["run_completed"], (
            f"a client given the waiting stop ({stop.id}) reconnects after the run was "
            f"cancelled and is given {[(e.id, e.event) for e in later]}: it never hears that "
            f"the run ended; a replay gives the cancelled stop the id "
            f"{[e.id for e in replay if e.event == 'run_completed']}"
        )
        assert later[0].data["payload"]["status"] == "cancelled"
        # The replay's stop is the cancelled one, under the id the reconnect gave.
        assert [(e.id, e.event) for e in replay[-1:]] == [(later[0].id, "run_completed")]
        assert [e.id for e in replay[:-1]] == [e.id for e in first[:-1]]


async def test_a_follower_following_a_taken_up_waiting_run_hears_it_was_cancelled(
    tmp_path: Path,
) -> None:
    """A follower holding the waiting stop follows the run while a worker holds its lease
    (it may move on); the worker lets go, the run is cancelled: the follower, woken, is
    given the cancelled stop, not ended with nothing."""
    agent = make_agent(str(tmp_path / "journal.db"))
    try:
        run_id = (await agent.run("pay")).run_id
        runtime = agent.deps.runtime
        waiting = await _stop(agent, run_id)
        assert waiting.event.payload["status"] == "awaiting_approval"
        read, wake = asyncio.Event(), asyncio.Event()

        async def changed(run: str, timeout: float) -> None:
            read.set()  # the follower read the run, found it live, and waits
            await wake.wait()

        async def follow() -> list[JournalEvent]:
            found = follow_events(runtime, run_id, after=waiting.id, changed=changed)
            return [item async for item in found]

        async with hold_lease(agent.deps.leases, run_id):
            follower = asyncio.create_task(follow())
            await asyncio.wait_for(read.wait(), 30)
        await cancel_idle(agent.deps, run_id, "cancelled by alice")
        wake.set()
        given = await asyncio.wait_for(follower, 30)
    finally:
        await agent.aclose()
    assert [(str(e.id), e.event.payload["status"]) for e in given] == [
        (f"{waiting.id}.2", "cancelled")
    ], f"the follower holding {waiting.id} was given {[str(e.id) for e in given]}"


async def test_a_cancelled_run_resumed_by_hand_is_heard_waiting_again(tmp_path: Path) -> None:
    """Resumed by hand, a run cancelled while it waited asks the same approval again, its
    request replayed (no effect begun): its stop ranks lower than the cancelled one, and a
    client holding the cancelled stop is given it all the same."""
    agent = make_agent(str(tmp_path / "journal.db"))
    try:
        run_id = (await agent.run("pay")).run_id
        waiting = await _stop(agent, run_id)
        await cancel_idle(agent.deps, run_id, "cancelled by alice")
        cancelled = await _stop(agent, run_id)
        assert str(cancelled.id) == f"{waiting.id}.2" and cancelled.id.comes_after(waiting.id)
        assert (await agent.resume(run_id)).status == RunStatus.AWAITING_APPROVAL
        again = await _stop(agent, run_id)
        heard = [e async for e in agent.events(run_id, after=str(cancelled.id))]
        # A client that was given the first wait, and missed the cancel, is told nothing
        # new: the run waits for the same answer, under the same id.
        unchanged = [e async for e in agent.events(run_id, after=str(waiting.id))]
    finally:
        await agent.aclose()
    assert again.id == waiting.id and not again.id.comes_after(cancelled.id)
    assert [(e.id, e.event.payload["status"]) for e in heard] == [(again.id, "awaiting_approval")]
    assert unchanged == []


async def test_a_failed_runs_stops_are_heard_but_a_failure_again_before_any_effect(
    tmp_path: Path,
) -> None:
    """A run whose one node raises stops with no effect begun, again and again: failed,
    failed (the same id: the documented case), given up on (dead letter), retried and
    failed (a lower rank), cancelled. Each stop of another rank is given to a client
    holding the one before."""
    graph = graph_from_yaml(
        "name: b\nentry: f\nnodes:\n  f: {kind: function, call: 'user_graph_steps:boom'}\n"
        "edges:\n  - {from: f, to: END}\n"
    )
    agent = Agent("x", model="echo", architecture=graph, runtime=SqliteRuntime(tmp_path / "j"))
    stops: list[tuple[str, str, list[str]]] = []  # (status, id, what a holder of the last hears)
    try:
        run_id = (await agent.run("go")).run_id

        async def stopped() -> None:
            stop = await _stop(agent, run_id)
            held = stops[-1][1] if stops else None
            heard = [str(e.id) async for e in agent.events(run_id, after=held)]
            stops.append((stop.event.payload["status"], str(stop.id), heard[-1:]))

        await stopped()
        for _ in range(4):  # 3 failed recoveries, then given up on
            await agent.resume(run_id)
            await stopped()
        await agent.retry(run_id)
        await stopped()
        await cancel_idle(agent.deps, run_id, "cancelled by alice")
        await stopped()
    finally:
        await agent.aclose()
    assert stops == [
        ("failed", "0.end.0.1", ["0.end.0.1"]),
        ("failed", "0.end.0.1", []),
        ("failed", "0.end.0.1", []),
        ("failed", "0.end.0.1", []),
        ("dead_letter", "0.end.0.3", ["0.end.0.3"]),
        ("failed", "0.end.0.1", ["0.end.0.1"]),
        ("cancelled", "0.end.0.2", ["0.end.0.2"]),
    ]


async def test_a_stop_id_with_a_bad_rank_is_400_naming_it(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, client, auth):
        run_id = await waiting_run(client, auth)
        for bad in ("1.end.2.", "1.end.2.x", "1.end.2.2.2", "1.end.2.-1", "1.end.2." + "9" * 31):
            answer = await client.get(
                f"/v1/runs/{run_id}/events", headers=auth | {"Last-Event-ID": bad}
            )
            error = answer.json()["error"]
            assert answer.status_code == 400 and error["type"] == "bad_request", answer.text
            assert repr(bad) in error["message"] and "'SEQ.end.K.R'" in error["message"]


def test_a_stops_id_has_its_rank_after_its_effect_count() -> None:
    """`seq.end.k.r` sorts by `k`, then `r`; rank 0 is not written, and `seq.end.k` (a
    waiting stop's id, and every stop's before ranks) reads as rank 0."""
    ids = ["1.99", "1", "1.end.2", "1.end.2.1", "1.end.2.2", "1.end.2.4", "1.end.3", "2.0"]
    parsed = [EventId.parse(text) for text in ids]
    assert all(b.comes_after(a) for a, b in itertools.pairwise(parsed))
    assert [str(i) for i in parsed] == ids
    assert EventId.parse("1.end.2.0") == EventId.parse("1.end.2")
    assert str(EventId.parse("1.end.2.0")) == "1.end.2"
    assert EventId.parse("1.end.2.7").comes_after(EventId.parse("1.end.2.4"))
    for status, text in [
        (RunStatus.AWAITING_APPROVAL, "3.end.5"),
        (RunStatus.INTERRUPTED, "3.end.5"),
        (RunStatus.FAILED, "3.end.5.1"),
        (RunStatus.CANCELLED, "3.end.5.2"),
        (RunStatus.DEAD_LETTER, "3.end.5.3"),
        (RunStatus.COMPLETED, "3.end.5"),
        (RunStatus.LIMIT_REACHED, "3.end.5.4"),
        (RunStatus.BUDGET_EXHAUSTED, "3.end.5.4"),
    ]:
        assert str(EventId.of_stop(3, 5, status)) == text
    with pytest.raises(BadEventId, match=r"'1\.end\.2\.2\.2' is not"):
        EventId.parse("1.end.2.2.2")


def test_the_moves_a_run_makes_without_a_resume_by_hand_go_up_in_rank() -> None:
    """With no effect begun and no transition journaled: a waiting run is cancelled or cut
    off (its deadline, its budget); a failed run is cancelled, given up on or cut off. Each
    stop ranks above the one before. A wait or a completion comes only after an effect
    begun or a transition (or a resume by hand): rank 0, written as before ranks."""
    waiting = [RunStatus.AWAITING_APPROVAL, RunStatus.INTERRUPTED]
    cut_off = [RunStatus.LIMIT_REACHED, RunStatus.BUDGET_EXHAUSTED]
    moves = [(w, s) for w in waiting for s in [RunStatus.FAILED, RunStatus.CANCELLED, *cut_off]]
    moves += [(RunStatus.FAILED, s) for s in [RunStatus.CANCELLED, RunStatus.DEAD_LETTER, *cut_off]]
    for before, after in moves:
        assert EventId.of_stop(4, 2, after).comes_after(EventId.of_stop(4, 2, before))
    assert {stop_rank(s) for s in cut_off} == {max(StopRank)}
    assert {stop_rank(s) for s in [*waiting, RunStatus.COMPLETED]} == {StopRank.PLAIN}


STOPPED = [s for s in RunStatus if not s.in_progress]
# The ranks docs/serving.md gives the statuses (`r` of `seq.end.k.r`).
RANKS = {
    RunStatus.AWAITING_APPROVAL: 0,
    RunStatus.INTERRUPTED: 0,
    RunStatus.FAILED: 1,
    RunStatus.CANCELLED: 2,
    RunStatus.DEAD_LETTER: 3,
    RunStatus.COMPLETED: 0,
    RunStatus.LIMIT_REACHED: 4,
    RunStatus.BUDGET_EXHAUSTED: 4,
}
# One stop after the one before: its status, transitions and effects journaled in between.
Step = tuple[RunStatus, int, int]


def _stop_events(steps: list[Step], after: EventId | None) -> list[JournalEvent]:
    """What a client holding `after` is given of a run stopped after `steps`, its journal
    made of the records the run's stores keep (effect keys naming node visits)."""
    run_id = "r1"
    seq = sum(step[1] for step in steps)
    begun = sum(step[2] for step in steps)
    effects = [
        EffectRecord(run_id, f"{run_id}:agent:{n}:0", "tool", {}, status=EffectStatus.DONE)
        for n in range(begun)
    ]
    record = RunRecord(run_id, "g", "h", None, None, status=steps[-1][0])
    return journal_events(record, [], effects, after, stopped=True, last_seq=seq)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(STOPPED), st.integers(0, 2), st.integers(0, 2)),
        min_size=2,
        max_size=10,
    )
)
def test_a_client_holding_a_stop_is_given_the_next_unless_it_has_the_same_id(
    steps: list[Step],
) -> None:
    """Over any run's stops (statuses, and the transitions and effects begun between them):
    a stop's id reads back as itself and carries its status's rank; the next stop's id comes
    after it exactly when a transition was journaled or an effect begun in between, or the
    rank went up (it is lower only when neither and the rank went down: a resume by hand),
    and is the same exactly when neither and the rank is the same; a client holding a stop
    is given the next one exactly when its id is another, and nothing twice; a client
    holding a stop's id as servers before ranks wrote it (`seq.end.k`) is given any stop
    whose id is another (that one again, once)."""
    assert set(RANKS) == set(STOPPED)
    for i in range(1, len(steps)):
        [before] = _stop_events(steps[:i], None)
        [now] = _stop_events(steps[: i + 1], None)
        assert EventId.parse(str(now.id)) == now.id
        status, transitions, begun = steps[i]
        rank, rank_before = RANKS[status], RANKS[steps[i - 1][0]]
        seq, begun_all = sum(t for _, t, _ in steps[: i + 1]), sum(e for _, _, e in steps[: i + 1])
        assert str(now.id) == f"{seq}.end.{begun_all}" + (f".{rank}" if rank else "")
        same_place = not transitions and not begun
        assert now.id.comes_after(before.id) == (not same_place or rank > rank_before)
        assert (now.id == before.id) == (same_place and rank == rank_before)
        given_next = _stop_events(steps[: i + 1], before.id)
        assert [e.id for e in given_next] == ([] if now.id == before.id else [now.id])
        assert _stop_events(steps[: i + 1], now.id) == []
        old_form = EventId.parse(f"{before.id.seq}.end.{before.id.stop}")
        again = [e.id for e in _stop_events(steps[: i + 1], old_form)]
        assert again == ([] if now.id == old_form else [now.id])

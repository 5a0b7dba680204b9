"""A run's events read back from its journal, and followed while it goes on: one source for
whoever watches a run from outside the process that drives it (the HTTP server, workers).

The journal keeps transitions and effects, not events, so the events are derived from them,
the same way every time: each committed transition `seq` gives `node_started`, then one or two
events per effect of that node visit (tool calls and results, approval requests and answers),
then `node_completed`; a node inside a child graph (`each/0/tools`) alike, its effects found
by the visits of the nodes above it (`effect_visits`). Their ids, `EventId(seq, index)`
written `"seq.index"`, are therefore stable: a watcher that reconnects after `"7.2"` gets
exactly the events after it, none lost and none twice (a follower gives transitions in seq
order, waiting for one committed after a later one). `run_started` is `0.0`. When the run
stops (finished, or waiting for an approval or a value), a `run_completed` event with the
status follows, id `"seq.end.K"` (`"seq.end.K.R"`), and the source ends: `seq` the run's last
transition, `K` how many times its node visits had begun an effect (`stop_mark`), `R` the rank
of its status (`event_ids.StopRank`: 0, unwritten, for a waiting stop). A run may stop more
than once with no transition between (two approvals asked in one visit, one after the other,
each answered by a resume; a waiting run then cancelled); each stop has begun at least one
more effect (`K` grows) or has another rank, so a watcher holding the one before is given it
(`event_ids` names the one case that does neither). Model text arrives inside
`node_completed`'s patch; streamed chunks are not journaled, so they are not in this source.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loomgraph.agent.effect_visits import VisitEffects, VisitWalk, visit_of
from loomgraph.agent.event_ids import BadEventId, EventId
from loomgraph.engine.effects import APPROVAL_REQUEST_KIND
from loomgraph.protocols import EffectRecord, EffectStatus, RunRecord, RunStatus, Transition
from loomgraph.protocols.events import (
    NODE_COMPLETED,
    NODE_STARTED,
    PERMISSION_DECISION,
    RUN_COMPLETED,
    RUN_STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    Event,
)
from loomgraph.protocols.runtime import RunReader, UnknownRun

# BadEventId and EventId re-exported: they were defined here before `event_ids` held them.
__all__ = [
    "GAP_READS",
    "BadEventId",
    "EventId",
    "JournalEvent",
    "follow_events",
    "journal_events",
    "stop_mark",
]

# How many reads in a row a follower waits for a missing seq while later ones are there
# (and for as many poll intervals: wakes can come faster than a slow commit).
GAP_READS = 8
_clock = time.monotonic  # replaced in tests


def stop_mark(run_id: str, effects: Sequence[EffectRecord]) -> int:
    """How many times the run's node visits have begun an effect (`k` of a stop's id
    `seq.end.k`): a resume that stops again has begun one more at least (the approval it was
    given, the next call asked for; a call that failed, run again), and this count never goes
    down. Effects of the run itself (an episode owed to memory) are left out: they are
    written once it ended, and its stop's id must not change."""
    return sum(e.attempts for e in effects if visit_of(run_id, e.key) is not None)


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One event derived from the journal, with its stable id."""

    id: EventId
    event: Event


def _event(
    record: RunRecord, kind: str, payload: dict[str, Any], seq: int, node: str | None, at: float
) -> Event:
    return Event(kind, payload, record.run_id, seq, node, record.user_id, record.session_id, at)


def _effect_events(effect: EffectRecord) -> list[tuple[str, dict[str, Any]]]:
    """What one effect tells a watcher: a call and its result, or an approval asked/answered."""
    intent, outcome = effect.intent, effect.outcome or {}
    if effect.kind == "tool":
        out: list[tuple[str, dict[str, Any]]] = [(TOOL_CALL, {"call": intent.get("call")})]
        if effect.status == EffectStatus.DONE:
            out.append((TOOL_RESULT, {"call": intent.get("call"), "result": outcome}))
        return out
    if effect.kind == APPROVAL_REQUEST_KIND:
        call = intent.get("call") or {}
        return [
            (
                PERMISSION_DECISION,
                {
                    "verdict": "ask",
                    "rule": intent.get("rule", ""),
                    "reason": intent.get("reason", ""),
                    "tool": call.get("tool"),
                    "call_id": call.get("id"),
                },
            )
        ]
    if effect.kind == "approval" and effect.status == EffectStatus.DONE:
        call = intent.get("call") or {}
        answer = outcome.get("answer")
        return [
            (
                PERMISSION_DECISION,
                {
                    "verdict": "allow" if answer else "deny",
                    "rule": "approval:granted" if answer else "approval:denied",
                    "tool": call.get("tool"),
                    "call_id": call.get("id"),
                    "approver": outcome.get("by", ""),
                    "edited": isinstance(answer, dict),
                },
            )
        ]
    return []


def journal_events(
    record: RunRecord,
    transitions: Sequence[Transition],
    effects: Sequence[EffectRecord],
    after: EventId | None = None,
    *,
    stopped: bool | None = None,
    last_seq: int | None = None,
    walk: VisitWalk | None = None,
) -> list[JournalEvent]:
    """The events the journal holds for a run, after `after`, stop event included when the
    run stopped (by default: when it is neither `queued` nor `running`).

    `transitions` may be only the newest of the run's transitions (a follower's), with
    `last_seq` the seq of the run's last one when none of them is, and `walk` the one that
    took in every transition before them (it tells in which visit of the nodes above it a
    child graph's transition was made, and takes `transitions` in too). `effects` are all
    the run's effects, read after `record` when the run stopped (they number the stop)."""
    out: list[JournalEvent] = []

    def add(eid: EventId, event: Event) -> None:
        # Not only the events after `after`: the stop is also given to a client holding
        # another stop of the same transition and effect count (`is_new_after`).
        if eid.is_new_after(after):
            out.append(JournalEvent(eid, event))

    if record.initial is not None or transitions:
        prompt = record.initial.prompt if record.initial else ""
        add(
            EventId(0, 0),
            _event(
                record,
                RUN_STARTED,
                {"prompt": prompt, "graph": record.graph_name},
                0,
                None,
                record.created_at,
            ),
        )
    if walk is None:
        walk = new_walk(record)
    grouped = VisitEffects(record.run_id, effects if transitions else ())
    for t in sorted(transitions, key=lambda t: t.seq):
        enclosing = walk.step(t)  # every transition, those before `after` too
        if after is not None and t.seq < after.seq:
            continue
        i = 0
        add(
            EventId(t.seq, i),
            _event(record, NODE_STARTED, {"node": t.node, "visit": t.visit}, t.seq, t.node, t.at),
        )
        for effect in grouped.of(t, enclosing):
            for kind, payload in _effect_events(effect):
                i += 1
                add(EventId(t.seq, i), _event(record, kind, payload, t.seq, t.node, t.at))
        i += 1
        payload = {"node": t.node, "visit": t.visit, "next": t.next_node, "patch": t.patch}
        add(EventId(t.seq, i), _event(record, NODE_COMPLETED, payload, t.seq, t.node, t.at))
    if (not record.status.in_progress) if stopped is None else stopped:
        last = max((t.seq for t in transitions), default=last_seq or 0)
        result = record.result or {}
        payload = {
            "status": str(record.status),
            "reason": record.reason,
            "output": result.get("output"),
            "result": record.result,
        }
        add(
            EventId.of_stop(last, stop_mark(record.run_id, effects), record.status),
            _event(record, RUN_COMPLETED, payload, last, None, record.updated_at),
        )
    return out


def new_walk(record: RunRecord) -> VisitWalk:
    """A walk over the run's transitions from its first (a fork's counts its checkpoint's
    visits)."""
    return VisitWalk(record.initial.visits if record.initial is not None else None)


# Waits until the run may have changed, or `timeout` seconds passed.
Changed = Callable[[str, float], Awaitable[None]]


async def _poll(run_id: str, timeout: float) -> None:
    await asyncio.sleep(timeout)


async def run_is_live(runtime: RunReader, record: RunRecord) -> bool:
    """Whether the run may still move: queued or running, or resting in a status that is not
    final (awaiting approval, failed, ...) while a worker holds its lease to resume it (the
    status changes only when that resume ends)."""
    if record.status.in_progress:
        return True
    if record.status.final:
        return False
    read = getattr(runtime, "lease", None)
    lease = None if read is None else await read(record.run_id)
    return lease is not None and lease.expires_at > time.time()


async def _moved(
    runtime: RunReader,
    read: Callable[[str], Awaitable[RunRecord | None]],
    run_id: str,
    seen: tuple[RunStatus, float],
) -> bool:
    """Whether a run seen stopped (status, when) went on since: resumed, or stopped again.
    The effects read in between may then hold what the resume began, which would number its
    stop with the count the next stop could have, and that next stop would be lost."""
    record = await read(run_id)
    if record is None or (record.status, record.updated_at) != seen:
        return True
    return await run_is_live(runtime, record)


def _in_order(transitions: Sequence[Transition], known: int) -> list[Transition]:
    """The transitions right after seq `known`, up to the first seq missing."""
    ready: list[Transition] = []
    for t in sorted(transitions, key=lambda t: t.seq):
        if t.seq == known + len(ready) + 1:
            ready.append(t)
        elif t.seq > known + len(ready):
            break
    return ready


async def follow_events(
    runtime: RunReader,
    run_id: str,
    *,
    after: EventId | None = None,
    changed: Changed | None = None,
    poll_interval: float = 0.5,
    load: Callable[[str], Awaitable[RunRecord | None]] | None = None,
    gap_reads: int = GAP_READS,
) -> AsyncIterator[JournalEvent]:
    """The run's journaled events after `after`, then each new one as it is journaled,
    until the run stops; wherever the run is driven from (any process sharing the journal).

    `changed(run_id, timeout)` returns when the run may have moved on (a process that drives
    the run can wake its watchers at once); without it the journal is read every
    `poll_interval` seconds. `load` reads the run record (default `runtime.load_run`): a
    caller that may only see some runs passes a reader filtered by user. An unknown run
    raises `UnknownRun`.

    Seqs are dense (1, 2, 3, ...), but writers on several connections may commit seq N+1
    before seq N: transitions are given in seq order, and those after a missing seq wait
    for it. A seq still missing once the run has stopped, or after `gap_reads` reads in a
    row that took at least `gap_reads * poll_interval` seconds (4 s by default), is taken
    as never coming (a writer failed between taking the seq and writing it) and the rest
    is given; should it come later all the same, it is not given.
    """
    wait = changed or _poll
    read = load or runtime.load_run
    # Only the transitions not given yet are read, where the journal can (an SQL range read).
    newer = getattr(runtime, "transitions_after", None)
    known = 0  # every seq up to this one was given (or given up on)
    held, since = 0, 0.0  # reads in a row that found seqs after a missing one; from when
    walk: VisitWalk | None = None
    while True:
        record = await read(run_id)
        if record is None:
            raise UnknownRun(run_id)
        stopped = not await run_is_live(runtime, record)
        seen = (record.status, record.updated_at)  # a kept record may change in place
        # Read after the record: a run seen stopped has every transition it made committed.
        if newer is not None:
            transitions = await newer(run_id, known)
        else:
            transitions = [t for t in await runtime.transitions(run_id) if t.seq > known]
        ready = _in_order(transitions, known)
        if len(ready) == len(transitions):
            held = 0
        elif ready or not held:  # a seq missing, not the one missing at the last read
            held, since = 1, _clock()
        else:
            held += 1
        if held and (
            stopped or (held >= gap_reads and _clock() - since >= gap_reads * poll_interval)
        ):
            ready, held = sorted(transitions, key=lambda t: t.seq), 0
        if walk is None or ready or stopped:
            walk = walk or new_walk(record)
            # Effects are read only when a transition is new (they belong to transitions, and
            # each is journaled before its visit's transition) or the run stopped (they number
            # the stop).
            effects = await runtime.effects(run_id) if ready or stopped else []
            if stopped and await _moved(runtime, read, run_id, seen):
                stopped = False  # resumed since: its next stop is given, with what it began
            last = ready[-1].seq if ready else known
            events = journal_events(
                record, ready, effects, after, stopped=stopped, last_seq=last, walk=walk
            )
            for item in events:
                yield item
                after = item.id
            known = last
        if stopped:
            return
        await wait(run_id, poll_interval)

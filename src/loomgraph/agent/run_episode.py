"""The episode a completed run leaves in memory: kept before the run's end is journaled, so a
crash between the two leaves a run `running` whose resume ends it and keeps the episode again
(memory replaces an episode by run id); and, when memory could not keep it (an outage), owed
in the journal, where the resume of the finished run finds it and keeps it then.

Either may come after the user had memory `forget` the turn, and a worker may stall between
its lease check and memory's write while another takes the run over: the episode says when
its run started (`Episode.started_at`) and carries its writer's lease token (`fence`), and
memory refuses one a `forget` covers and never replaces an episode with one of a lower token
(`MemoryStore.remember`). A custom `Memory` that ignores both behaves as before.

The owed episode is an effect of the run (kind `memory_episode`, key `episode_key`), written
only when memory failed: a run whose memory kept its episode pays one read of its lease (the
zombie check) and no journal write for it; one without memory (`NoMemory`) pays nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from loomgraph.agent.deps import current_run
from loomgraph.agent.memory_wiring import keeps_episodes
from loomgraph.agent.run_memory import episode_of, offered_only
from loomgraph.engine.scope import EventSink, RunScope
from loomgraph.protocols import (
    Deps,
    EffectRecord,
    EffectStatus,
    Episode,
    RunRecord,
    RunStatus,
)
from loomgraph.protocols.events import MEMORY_REMEMBER_FAILED, Event
from loomgraph.protocols.runtime import current_fence
from loomgraph.runtime.errors import JournalEncodingError, LeaseLost

__all__ = [
    "EPISODE_EFFECT",
    "episode_key",
    "keep_episode",
    "keep_run_episode",
    "owed_episode",
    "pay_episode",
]

_log = logging.getLogger(__name__)

EPISODE_EFFECT = "memory_episode"  # the kind of the effect an unkept episode is owed as


def episode_key(run_id: str) -> str:
    """The key of the effect that owes `run_id`'s episode to memory."""
    return f"{run_id}:episode"


async def keep_run_episode(
    scope: RunScope, prompt: str, output: Any, state: dict[str, Any], *, resumed: bool
) -> Episode | None:
    """The completed run's episode (its prompt, answer and conversation) kept in memory when
    memory keeps episodes (`keep_episode`); what fact extraction is told, or None."""
    if not keeps_episodes(scope.deps.memory):
        return None
    episode = episode_of(scope.run_id, scope.user_id, scope.session_id, prompt, output, state)
    run = current_run.get()  # the run's record (`AgentSession._opened`)
    if run is not None:  # when the run started: a `forget` made since covers it
        episode.started_at = run.created_at or None
    return await keep_episode(scope, episode, resumed=resumed)


async def keep_episode(scope: RunScope, episode: Episode, *, resumed: bool) -> Episode | None:
    """Keep a completed run's episode in memory (naming only the tools the run offered:
    `offered_only`), before its end is journaled; the episode
    to extract facts from once the end is journaled, or None (not kept; or its answer
    quotes untrusted text: facts are written with no egress check).

    `LeaseLost` first for a worker whose lease was taken over (a zombie), which `finish_run`
    would refuse after this; the episode carries the worker's lease token (`fence`), so one
    that stalls past that check never replaces its successor's episode. A failure of memory
    is reported (a `memory_remember_failed` event, a warning) and owed in the journal for a
    resume; the run ends all the same. Memory refusing it (a `forget` covers the run, or a
    newer holder's episode is kept) owes nothing and extracts nothing.
    `resumed`: the run was taken up again, so an earlier attempt may have owed it."""
    await _check_lease(scope)
    episode = replace(offered_only(episode, scope.deps.tools), fence=_token(episode.run_id))
    runtime = scope.deps.runtime
    extract = not scope.untrusted.carried_by(episode.output)
    try:
        stored = await scope.deps.memory.remember(episode)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        _log.warning("run %s: memory did not keep its episode: %s", episode.run_id, error)
        await scope.emit(MEMORY_REMEMBER_FAILED, {"error": error}, None, scope.seq)
        await _owe(runtime, episode, extract, error)
        return None
    if resumed:  # what an earlier attempt owed is paid now
        owed = await runtime.effect(episode.run_id, episode_key(episode.run_id))
        if owed is not None and owed.status != EffectStatus.DONE:
            await runtime.end_effect(owed.run_id, owed.key, {}, EffectStatus.DONE)
    if stored is False:
        _log.info(
            "run %s: memory did not take its episode (forgotten, or a newer one's)", episode.run_id
        )
        return None
    return episode if extract else None


async def owed_episode(deps: Deps, record: RunRecord) -> EffectRecord | None:
    """The episode a completed run still owes memory (its effect), or None; one read, none
    for a run that did not complete or an Agent without memory."""
    if record.status != RunStatus.COMPLETED or not keeps_episodes(deps.memory):
        return None
    owed = await deps.runtime.effect(record.run_id, episode_key(record.run_id))
    return owed if owed is not None and owed.status != EffectStatus.DONE else None


async def pay_episode(
    deps: Deps, record: RunRecord, sink: EventSink, on_episode: Callable[[Episode], None] | None
) -> None:
    """Keep the episode a finished run owes memory (under its lease: read again here), then
    hand it to `on_episode` (fact extraction, once: it never ran for an unkept episode). A
    failure again is reported to `sink` and stays owed; memory refusing it (a `forget` made
    since the run started covers it) pays it, with nothing extracted."""
    owed = await owed_episode(deps, record)
    if owed is None:
        return
    episode = Episode(**owed.intent["episode"])
    # When its run started (an intent journaled before it was kept says nothing), and the
    # payer's own token: it holds the run's lease now, after whoever owed it.
    episode = replace(
        episode,
        started_at=episode.started_at or record.created_at or None,
        fence=max(episode.fence, _token(record.run_id)),
    )
    try:
        stored = await deps.memory.remember(episode)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        _log.warning("run %s: memory did not keep its episode: %s", record.run_id, error)
        # Provisional, as at the run's end; seq 0: the resume made no transition.
        who = (record.run_id, 0, None, record.user_id, record.session_id, time.time())
        await sink(Event(MEMORY_REMEMBER_FAILED, {"error": error}, *who))
        return
    await deps.runtime.end_effect(record.run_id, owed.key, {}, EffectStatus.DONE)
    if on_episode is not None and owed.intent.get("extract") and stored is not False:
        on_episode(episode)


async def _owe(runtime: Any, episode: Episode, extract: bool, error: str) -> None:
    """Journal the episode memory did not keep (fenced as every write of the run's holder);
    a record of an earlier attempt is updated."""
    intent = {"episode": dataclasses.asdict(episode), "extract": extract}
    key = episode_key(episode.run_id)
    owed = EffectRecord(
        episode.run_id, key, EPISODE_EFFECT, intent, {"error": error}, EffectStatus.FAILED
    )
    try:
        if await runtime.begin_effect(owed) is not None:
            await runtime.end_effect(episode.run_id, key, {"error": error}, EffectStatus.FAILED)
    except JournalEncodingError as err:
        # An episode the journal cannot hold (a value no JSON takes) is lost, as reported;
        # the run must not fail over it.
        _log.warning("run %s: its unkept episode cannot be journaled: %s", episode.run_id, err)


def _token(run_id: str) -> int:
    """The fencing token of the lease the current task holds on `run_id`; 0 without one."""
    lease = current_fence.get()
    return lease.token if lease is not None and lease.run_id == run_id else 0


async def _check_lease(scope: RunScope) -> None:
    """Refuse (`LeaseLost`) a writer whose lease on the run is no longer current, before it
    writes memory, which the lease does not fence (memory only keeps a newer holder's episode
    from a lower token): one read of the lease, none without leases."""
    lease = current_fence.get()
    read = getattr(scope.deps.leases, "lease", None)
    if lease is None or lease.run_id != scope.run_id or read is None:
        return
    current = await read(scope.run_id)
    if current is None or current.token != lease.token:
        raise LeaseLost(scope.run_id, lease.token, "lease lost before memory kept the episode")

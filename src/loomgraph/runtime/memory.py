"""`InMemoryRuntime`: the journal kept in process memory (the default; nothing survives exit).

It leases and fences runs as the SQL journals do (`runtime.lease_table`): two resumes of one
run in one process never both drive it, the second gets `RunConflict`."""

from __future__ import annotations

import bisect
import pickle
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from itertools import islice
from typing import Any

from loomgraph.protocols import (
    AuditEntry,
    EffectRecord,
    EffectStatus,
    PinnedGraph,
    RunRecord,
    RunStatus,
    Transition,
    UnknownRun,
)
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.runtime.audit_entries import entry_from_text, entry_text
from loomgraph.runtime.audit_outbox import ending, refused
from loomgraph.runtime.errors import LeaseLost, RunConflict, RunExists, RunFinished, UnknownEffect
from loomgraph.runtime.frozen import freeze, thaw
from loomgraph.runtime.lease_table import LeaseTable
from loomgraph.runtime.text import (
    check_run_ids,
    storable_reason,
)

__all__ = ["InMemoryRuntime", "UnknownRun"]


class InMemoryRuntime:
    """A journal in dicts and lists; keeps the most recent `max_runs` runs, and every run in
    progress (queued or running) or leased besides. A stopped run's transitions and effects
    are kept as one compact blob (`runtime.frozen`) until it is written again (a resume).
    Runs are leased for `lease_seconds` (renewed by their holder) and writes fenced, as in
    the SQL journals."""

    # Nothing is rebuilt from a journal in memory often enough to need snapshots.
    snapshot_every = 0

    def __init__(self, max_runs: int = 1000, *, lease_seconds: float = 30.0) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self.max_runs = max_runs
        self.lease_seconds = lease_seconds
        self._leases = LeaseTable()
        self._lease_rows = self._leases.rows
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._transitions: dict[str, list[Transition]] = {}
        self._effects: dict[str, dict[str, EffectRecord]] = {}
        self._frozen: dict[str, bytes] = {}
        # Each run's result as `finish_run` froze it, decoded afresh for each `load_run`.
        self._results: dict[str, bytes] = {}
        # Kept when their runs are forgotten: one per distinct graph, few and small.
        self._graphs: dict[str, PinnedGraph] = {}
        # The audit outbox: entries an outage cut off a run, as the SQL journals keep them.
        self._audit_kept: dict[str, list[str]] = {}

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run, forgetting the oldest finished one when full; `RunExists` when
        the id is kept already. Text is checked as the durable journals check it
        (`runtime.text`), so a run behaves the same in memory."""
        check_run_ids(run)
        if run.run_id in self._runs:
            raise RunExists(run.run_id)
        now = time.time()
        self._runs[run.run_id] = replace(
            run,
            status=RunStatus(run.status),
            reason=storable_reason(run.reason),
            created_at=run.created_at or now,
            updated_at=now,
        )
        self._transitions[run.run_id] = []
        self._effects[run.run_id] = {}
        excess = len(self._runs) - self.max_runs
        if excess > 0:
            # Oldest first (a finished run moves to the end); a run in progress is passed
            # over, not a stop: one long run must not keep every later one alive. So is a
            # leased one (a resume under way, before it journals the run `running`).
            live = self._leases.live
            stopped = (
                rid
                for rid, kept in self._runs.items()
                if not kept.status.in_progress and not live(rid)
            )
            for old in list(islice(stopped, excess)):
                self._forget(old)

    async def put_graph(self, graph: PinnedGraph) -> None:
        """Keep a graph under its hash (once)."""
        self._graphs.setdefault(graph.hash, graph)

    async def move_run(
        self, run_id: str, graph: PinnedGraph, *, fence: Lease | None = None
    ) -> None:
        """Pin a run to another graph; fenced."""
        self._fence(run_id, fence)
        run = self._run(run_id)
        await self.put_graph(graph)
        run.graph_name, run.graph_hash = graph.name, graph.hash

    async def graph(self, graph_hash: str) -> PinnedGraph | None:
        """The graph kept under a hash, or None."""
        return self._graphs.get(graph_hash)

    def _run(self, run_id: str) -> RunRecord:
        """The journal's own record of a run (to write), or `UnknownRun`."""
        run = self._runs.get(run_id)
        if run is None:
            raise UnknownRun(run_id)
        return run

    def _fence(self, run_id: str, fence: Lease | None) -> None:
        """Refuse a write to `run_id` fenced with a lease (the one given, else the current
        task's on this run) whose token is no longer the run's: `LeaseLost`, nothing written.
        Unfenced writes (no lease held) are made, as in the SQL journals."""
        # One call per write, as the SQL journals' `_fence`: the lease is picked as there
        # (the one given, else the task's when it is this run's) and its token compared.
        lease = fence if fence is not None else current_fence.get()
        if lease is None or lease.run_id != run_id:
            return
        row = self._lease_rows.get(run_id)
        if row is None or row.token != lease.token:
            if run_id not in self._runs:
                raise UnknownRun(run_id)
            raise refused(LeaseLost(run_id, lease.token))

    def _forget(self, run_id: str) -> None:
        self._leases.forget(run_id)
        self._runs.pop(run_id, None)
        self._transitions.pop(run_id, None)
        self._effects.pop(run_id, None)
        self._frozen.pop(run_id, None)
        self._results.pop(run_id, None)
        self._audit_kept.pop(run_id, None)

    def _thawed(self, run_id: str) -> None:
        """Make a frozen run's records live again, before they are written."""
        self._transitions[run_id], self._effects[run_id] = thaw(run_id, self._frozen.pop(run_id))

    def _kept(self, run_id: str) -> tuple[list[Transition], dict[str, EffectRecord]]:
        """A run's records to read: the live ones, or fresh copies of a frozen run's."""
        blob = self._frozen.get(run_id)
        if blob is not None:
            return thaw(run_id, blob)
        return self._transitions.get(run_id, []), self._effects.get(run_id, {})

    async def load_run(self, run_id: str) -> RunRecord | None:
        """A run's record, or None: a copy, its result decoded afresh from the blob
        `finish_run` made, so what a reader changes stays its own (as with a SQL journal)."""
        run = self._runs.get(run_id)
        return None if run is None else self._copy(run)

    def _copy(self, run: RunRecord) -> RunRecord:
        blob = self._results.get(run.run_id)
        return replace(run) if blob is None else replace(run, result=pickle.loads(blob))

    async def append_transition(
        self, transition: Transition, *, fence: Lease | None = None
    ) -> None:
        """Append one transition (kept as given: node names are checked with the graph);
        fenced. A seq already recorded is `RunConflict`, nothing written, as in the SQL
        journals; one below the last (filling a gap) goes in its place."""
        run_id = transition.run_id
        self._fence(run_id, fence)
        if run_id in self._frozen:
            self._thawed(run_id)
        try:  # (indexing, not `.get`: no call on the hot path)
            kept = self._transitions[run_id]
        except KeyError:
            raise UnknownRun(run_id) from None
        seq = transition.seq
        if kept and kept[-1].seq >= seq:
            at = bisect.bisect_left(kept, seq, key=_seq)
            if at < len(kept) and kept[at].seq == seq:
                raise RunConflict(run_id, f"transition seq {seq} is already recorded")
            kept.insert(at, transition)
        else:
            kept.append(transition)

    async def transitions(self, run_id: str) -> list[Transition]:
        """Every transition of a run, in order."""
        return await self.transitions_after(run_id, 0)

    async def transitions_after(self, run_id: str, seq: int) -> list[Transition]:
        """The transitions of a run after `seq`, in order."""
        if run_id not in self._runs:
            raise UnknownRun(run_id)
        kept = self._kept(run_id)[0]
        return kept[bisect.bisect_right(kept, seq, key=_seq) :]

    async def begin_effect(
        self, effect: EffectRecord, *, fence: Lease | None = None
    ) -> EffectRecord | None:
        """Journal an intent; return the earlier record when this key was seen before
        (counting one more attempt when it was not done); fenced."""
        self._fence(effect.run_id, fence)
        if effect.run_id in self._frozen:
            self._thawed(effect.run_id)
        try:
            effects = self._effects[effect.run_id]
        except KeyError:
            raise UnknownRun(effect.run_id) from None
        prior = effects.get(effect.key)
        if prior is None:
            effects[effect.key] = effect
            return None
        if prior.status != EffectStatus.DONE:
            prior.status = EffectStatus.UNKNOWN_AFTER_CRASH
            prior.attempts += 1
            prior.recovered = True
        return prior

    async def end_effect(
        self,
        run_id: str,
        key: str,
        outcome: dict[str, Any],
        status: EffectStatus,
        *,
        fence: Lease | None = None,
    ) -> None:
        """Journal the outcome of an effect; fenced."""
        self._fence(run_id, fence)
        if run_id in self._frozen:
            self._thawed(run_id)
        try:
            effects = self._effects[run_id]
        except KeyError:
            raise UnknownRun(run_id) from None
        try:
            effect = effects[key]
        except KeyError:
            raise UnknownEffect(run_id, key) from None
        effect.outcome = outcome
        effect.status = status if type(status) is EffectStatus else EffectStatus(status)

    async def end_effect_keeping(
        self,
        run_id: str,
        key: str,
        outcome: dict[str, Any],
        status: EffectStatus,
        entries: Sequence[AuditEntry],
        *,
        fence: Lease | None = None,
    ) -> None:
        """`end_effect` with audit entries of the run kept beside it, after those kept
        already, as the SQL journals keep them in its transaction; fenced."""
        texts = [entry_text(entry) for entry in entries]
        await self.end_effect(run_id, key, outcome, status, fence=fence)
        # Nothing awaited since the outcome: the two happen together.
        self._keep_entries(run_id, texts)

    async def effects(self, run_id: str) -> list[EffectRecord]:
        """Every effect of a run, in the order they began."""
        return list(self._kept(run_id)[1].values())

    async def effect(self, run_id: str, key: str) -> EffectRecord | None:
        """One effect of a run by its key, or None."""
        return self._kept(run_id)[1].get(key)

    async def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        reason: str,
        result: dict[str, Any] | None,
        *,
        fence: Lease | None = None,
    ) -> None:
        """Record how a run ended; a run already finished keeps its status (`RunFinished`).
        Fenced. The audit entries the caller keeps with the end (`end_entries`) are kept with
        it, as the SQL journals keep them in its transaction."""
        self._fence(run_id, fence)
        run = self._run(run_id)
        if run.status.final:
            raise RunFinished(run_id, str(run.status))
        end = ending(run_id, RunStatus(status))
        if end is not None:
            self._keep_entries(run_id, [entry_text(entry) for entry in end.entries])
            end.kept = True
        run.status, run.reason = RunStatus(status), storable_reason(reason)
        # Kept as a blob, copied once here (the caller keeps and may change its result);
        # a result pickle cannot take (a lock an output holds) is kept as it is.
        blob = None if result is None else _frozen_result(result)
        if blob is None:
            self._results.pop(run_id, None)
        else:
            self._results[run_id], result = blob, pickle.loads(blob)
        run.result, run.updated_at = result, time.time()
        self._runs.move_to_end(run_id)
        if not run.status.in_progress and run_id in self._transitions:
            blob = freeze(self._transitions[run_id], self._effects[run_id])
            if blob is not None:
                self._frozen[run_id] = blob
                del self._transitions[run_id], self._effects[run_id]

    async def record_recovery(self, run_id: str, *, fence: Lease | None = None) -> int:
        """Count one more recovery (a resume after a crash or failure); the new count.
        Fenced."""
        self._fence(run_id, fence)
        run = self._run(run_id)
        run.recoveries += 1
        return run.recoveries

    async def reset_recoveries(self, run_id: str, *, fence: Lease | None = None) -> None:
        """Forget a run's failed recoveries (an operator's retry); fenced."""
        self._fence(run_id, fence)
        self._run(run_id).recoveries = 0

    async def keep_audit_entries(self, run_id: str, entries: Sequence[AuditEntry]) -> None:
        """Keep entries of a run after those kept already (as JSON text, as the SQL journals
        do); fenced. `UnknownRun` for a run not kept."""
        self._fence(run_id, None)
        if run_id not in self._runs:
            raise UnknownRun(run_id)
        self._keep_entries(run_id, [entry_text(entry) for entry in entries])

    def _keep_entries(self, run_id: str, texts: list[str]) -> None:
        """Keep entries of a run (as `entry_text`) after those kept already."""
        if texts:
            self._audit_kept.setdefault(run_id, []).extend(texts)

    async def kept_audit_entries(self, run_id: str) -> list[AuditEntry]:
        """The entries kept for a run, oldest first."""
        return [entry_from_text(text) for text in self._audit_kept.get(run_id, ())]

    async def drop_audit_entries(self, run_id: str, count: int) -> None:
        """Let go of the `count` oldest entries kept for a run; fenced."""
        self._fence(run_id, None)
        kept = self._audit_kept.get(run_id)
        if kept is not None and count > 0:
            del kept[:count]
            if not kept:
                del self._audit_kept[run_id]

    async def runs(
        self, user_id: str | None = None, *, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Runs, newest last, optionally of one user, in one status (copies, as `load_run`
        gives)."""
        return [
            self._copy(r)
            for r in self._runs.values()
            if (user_id is None or r.user_id == user_id) and (status is None or r.status == status)
        ]

    # ------------------------------------------------------------------ leases

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float | None = None, *, take_from: str | None = None
    ) -> Lease:
        """Take (or extend) the lease on a run; `RunConflict` while another owner holds it.
        `take_from` names an owner known to be dead; a new owner gets the next token."""
        if run_id not in self._runs:
            raise UnknownRun(run_id)
        return self._leases.acquire(
            run_id, owner, float(self.lease_seconds if ttl is None else ttl), take_from
        )

    async def renew_lease(self, run_id: str, owner: str, ttl: float | None = None) -> Lease:
        """Extend a lease this owner holds; `LeaseLost` (a `RunConflict`) when it was lost."""
        return self._leases.renew(run_id, owner, float(self.lease_seconds if ttl is None else ttl))

    async def release_lease(self, run_id: str, owner: str) -> bool:
        """Give a lease back; False when this owner did not hold it."""
        return self._leases.release(run_id, owner)

    async def lease(self, run_id: str) -> Lease | None:
        """The current lease on a run, expired or not; None when never taken, or released."""
        return self._leases.lease(run_id)

    async def close(self) -> None:
        """Nothing to close: the journal lives in this process."""


def _seq(transition: Transition) -> int:
    return transition.seq


def _frozen_result(result: dict[str, Any]) -> bytes | None:
    """A run's result as one blob, or None when pickle cannot take it."""
    try:
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # pickle's refusals are of many types (PicklingError, TypeError, ...)
        return None

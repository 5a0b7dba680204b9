"""A run's audit entries, written behind it in order and in batches: all of them durable
before any effect of the run starts, and before the run returns.

Awaiting each entry made a governed turn wait for about eleven fsyncs of the audit log, one
after the other (issue 19's W5). The run now hands each entry to its `AuditWriter` and goes
on; the writer appends them in the order they were made, and every entry handed to it while
an append is under way goes with the next one, in one batch (`record_many`, when the log has
it: one write and one fsync for the batch). `written()` waits until every entry so far is
acknowledged by the log (each acknowledged append is durable, as before). The run waits
there before anything leaves the process: a model call's stream, a tool call (after its
`tool_request` entry). So no effect ever starts before the entries that lead to it are in the
log, and what a crash can cut off is the tail after the last effect began, as before it was
what the crash interrupted.

An append that fails is raised by `written()` and by the next `add`; the entries after it are
not written (the log keeps the run's order). Nor are they dropped: the failed batch, what
queued behind it and what the run made after (each `add` raising) are `unwritten()`. On its
way out the run keeps them in its journal, when the journal is an `AuditOutbox`
(`keep_unwritten`), and its resume writes them first, behind an `audit_restored` marker,
before its `run_started` entry (`restore_kept`): an outage leaves no gap in the run's trail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from loomgraph.engine import audit_trail as trail
from loomgraph.protocols import AuditAction, AuditEntry, AuditLog, AuditOutbox
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.protocols.tasks import finished

_log = logging.getLogger(__name__)

Entry = AuditEntry
"""One entry to write: its action, its actor, its payload."""


class AuditWriter:
    """One run's pending audit entries and the task that writes them."""

    __slots__ = (
        "_acked",
        "_error",
        "_log",
        "_pending",
        "_run_id",
        "_sent",
        "_task",
        "_unwritten",
        "_user_id",
        "restoring",
    )

    def __init__(self, log: AuditLog, run_id: str, user_id: str | None) -> None:
        self._log, self._run_id, self._user_id = log, run_id, user_id
        self._pending: list[Entry] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._unwritten: list[Entry] = []  # once an append failed: what it left, in order
        self._acked = 0  # how many entries, the first ones, the log acknowledged
        self._sent = 0  # of the batch under way, the entries appended one by one so far
        # How many entries after the first (the marker) came from the journal's outbox and
        # are still kept there (`restore_kept`): they are not to be kept twice.
        self.restoring = 0

    @property
    def run_id(self) -> str:
        """The run whose entries these are."""
        return self._run_id

    @property
    def acknowledged(self) -> int:
        """How many entries, the first ones in order, the log acknowledged."""
        return self._acked

    def unwritten(self) -> list[Entry]:
        """What a failed append left unwritten, in order: the failed batch from the entry
        that failed on, what queued behind it and what was made after ([] while none failed)."""
        return list(self._unwritten)

    def add(self, action: str, actor: str, payload: Mapping[str, Any]) -> None:
        """Queue one entry behind the run's earlier ones; raises an earlier append's error
        (the entry is then unwritten, with those before it)."""
        if self._error is not None:
            self._unwritten.append((action, actor, payload))
            raise self._error
        self._pending.append((action, actor, payload))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
            self._task.add_done_callback(_retrieved)

    async def written(self) -> None:
        """Wait until every entry queued so far is appended; raises the first failure. A
        caller cancelled meanwhile leaves the appends to finish on their own."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)
        if self._error is not None:
            raise self._error

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self._sent = 0
                try:
                    await self._write(batch)
                except BaseException as err:  # kept for `written` and the next `add`
                    self._error = err
                    self._acked += self._sent
                    self._unwritten, self._pending = batch[self._sent :] + self._pending, []
                    raise
                self._acked += len(batch)
        finally:
            self._task = None

    async def _write(self, batch: list[Entry]) -> None:
        many = getattr(self._log, "record_many", None)
        if many is not None and len(batch) > 1:
            await many(batch, run_id=self._run_id, user_id=self._user_id)
            return
        for action, actor, payload in batch:
            await self._log.record(
                action, run_id=self._run_id, user_id=self._user_id, actor=actor, payload=payload
            )
            self._sent += 1


def _retrieved(task: asyncio.Task[None]) -> None:
    """Mark a failed drain's error seen: `written` reports it (or the run has gone)."""
    if not task.cancelled() and task.exception() is not None:
        _log.debug("audit append failed", exc_info=task.exception())


async def written_quietly(writer: AuditWriter | None) -> None:
    """`writer.written()` on a run's way out after an error of its own: that error is the
    one raised; an append that failed too is logged. A caller cancelling the run again
    meanwhile does not cut it off (the entries would be lost when the process exits)."""
    if writer is None:
        return
    try:
        await finished(writer.written())
    except Exception:
        _log.warning("audit entries of an ended run could not be written", exc_info=True)


async def restore_kept(writer: AuditWriter, runtime: object) -> None:
    """At a run's resume, before any entry of its own (`writer` has none yet): the entries
    outages cut off its earlier attempts, which its journal keeps (an `AuditOutbox`), are
    written behind an `audit_restored` marker; once the log has them all, the journal lets go
    of them. An outage meanwhile is raised (the resume stops) and they stay kept, once
    (`keep_unwritten` keeps none of them again)."""
    if not isinstance(runtime, AuditOutbox):
        return
    kept = await runtime.kept_audit_entries(writer.run_id)
    if not kept:
        return
    writer.add(AuditAction.AUDIT_RESTORED, trail.RUNTIME_ACTOR, trail.audit_restored(len(kept)))
    for action, actor, payload in kept:
        writer.add(action, actor, payload)
    writer.restoring = len(kept)
    await writer.written()
    # A crash (or a journal out of reach) before this is done writes them again at the next
    # resume: twice in the log rather than not at all.
    await runtime.drop_audit_entries(writer.run_id, len(kept))
    writer.restoring = 0


async def keep_unwritten(
    writer: AuditWriter | None, runtime: object, fence: Lease | None = None
) -> None:
    """On a run's way out: what its audit log could not take is kept in its journal (an
    `AuditOutbox`), after what the journal keeps already, for its resume to write; of the
    kept entries a restore queued, those the log took are let go of, the others stay as they
    are. Fenced with `fence` (the run's lease, when let go of already), else the task's. A
    journal out of reach too: logged, and the entries are lost. Runs to its end even when
    the caller cancels again. Nothing to do (no read, no write) when every entry went in."""
    if writer is None or not (writer.unwritten() or writer.restoring):
        return
    if isinstance(runtime, AuditOutbox):
        await finished(_keep(writer, runtime, fence))


async def _keep(writer: AuditWriter, outbox: AuditOutbox, fence: Lease | None) -> None:
    unwritten, restoring, acked = writer.unwritten(), writer.restoring, writer.acknowledged
    # The writer's first entries were the marker, then the `restoring` kept ones.
    done = min(max(acked - 1, 0), restoring)
    fresh = unwritten[max(0, 1 + restoring - acked) :] if restoring else unwritten
    if fence is not None:
        current_fence.set(fence)  # in this task's own context only
    run_id = writer.run_id
    try:
        if fresh:
            await outbox.keep_audit_entries(run_id, fresh)
    except Exception:
        _log.warning(
            "run %s: %d audit entries its audit log could not take are lost (its journal "
            "could not keep them)",
            run_id,
            len(fresh),
            exc_info=True,
        )
        return
    try:
        if done:
            await outbox.drop_audit_entries(run_id, done)
    except Exception:
        _log.warning(
            "run %s: %d kept audit entries are in the log but still kept (its journal could "
            "not let go of them): the next resume writes them again",
            run_id,
            done,
            exc_info=True,
        )

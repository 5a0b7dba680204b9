"""A run's audit entries, written behind it in order and in batches: all of them durable
before any effect of the run starts, and before the run returns.

Awaiting each entry made a governed turn wait for about eleven fsyncs of the audit log, one
after the other (issue 19's W5). The run now hands each entry to its `AuditWriter` and goes
on; the writer appends them in the order they were made, in batches (`record_many`, when the
log has it: one write and one fsync for the batch). `written()` waits until every entry so far
is acknowledged by the log (each acknowledged append is durable, as before). The run waits
there before anything leaves the process: a model call's stream, a tool call (after its
`tool_request` entry). So no effect ever starts before the entries that lead to it are in the
log, and what a crash can cut off is the tail after the last effect began, as before it was
what the crash interrupted.

A batch starts when the run waits (`written()`), or once `EAGER_BATCH` entries queue (to bound
what a run holds): not at each entry. Starting at the first entry of an idle writer made a
turn's entries trickle out in ~5 batches of one or two, each its own fsync, and made the run
wait at an effect for the batch under way and then its own; now the entries made since the
last effect go in one batch, one fsync, which the run waits for once. The guarantee above is
unchanged: what an effect waits for is in the log before it starts.

An append that fails is raised by `written()` and by the next `add`; the entries after it are
not written (the log keeps the run's order). Nor are they dropped: the failed batch, what
queued behind it and what the run made after (each `add` raising) are `unwritten()`. On its
way out the run keeps them in its journal, when the journal is an `AuditOutbox`
(`keep_unwritten`), and its resume writes them first, behind an `audit_restored` marker,
before its `run_started` entry (`restore_kept`): an outage leaves no gap in the run's trail.

The writer knows which of its entries the journal keeps already (`Kept`): those a restore
queued, and a run's `run_completed`, kept in the transaction that journals the run's end (so a
crash between the two leaves it kept, for the resume of the finished run). On the way out
(`keep_unwritten`) those the log took are let go of, and the outbox is left holding exactly
what the log did not take, in the run's order (`outbox_change`).

A node's own writes keep entries too: an approval's use is kept with the journal write that
records it (`OutcomeOutbox.end_effect_keeping`, `RunScope.end_effect_keeping`), and let go of
once the log has it (`kept_logged`, `RunScope.let_go_kept`), before its call acts.

A writer whose run lost its lease (a zombie: another worker owns the run) writes nothing more
and keeps nothing (`halt`, or the `fenced_out` check it is made with, asked at each entry and
before each batch): what it queued is another worker's run's business now. An append under
way when it learns cannot be called back, nor what the log took before.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import logging
from collections.abc import Callable, Mapping
from typing import Any

from loomgraph.engine import audit_trail as trail
from loomgraph.protocols import AuditAction, AuditEntry, AuditLog, AuditOutbox
from loomgraph.protocols.runtime import Lease, current_fence
from loomgraph.protocols.tasks import finished

_log = logging.getLogger(__name__)

EAGER_BATCH = 256
"""Entries queued before a batch starts without the run waiting for it."""

Entry = AuditEntry
"""One entry to write: its action, its actor, its payload."""


class Kept(enum.Enum):
    """Where an entry handed to an `AuditWriter` stands with the journal's audit outbox."""

    NOT_YET = "not_yet"  # kept there only if the log cannot take it (`keep_unwritten`)
    ALREADY = "already"  # kept there already: let go of once the log has it
    NEVER = "never"  # never kept (a restore's marker: the next restore writes its own)


class AuditWriter:
    """One run's pending audit entries and the task that writes them."""

    __slots__ = (
        "_acked",
        "_count",
        "_dropped",
        "_error",
        "_fenced_out",
        "_halted",
        "_kept",
        "_log",
        "_never",
        "_pending",
        "_run_id",
        "_sent",
        "_task",
        "_unwritten",
        "_user_id",
    )

    def __init__(
        self,
        log: AuditLog,
        run_id: str,
        user_id: str | None,
        *,
        fenced_out: Callable[[], bool] | None = None,
    ) -> None:
        self._log, self._run_id, self._user_id = log, run_id, user_id
        self._pending: list[Entry] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._unwritten: list[Entry] = []  # once an append failed: what it left, in order
        self._acked = 0  # how many entries, the first ones, the log acknowledged
        self._sent = 0  # of the batch under way, the entries appended one by one so far
        self._count = 0  # how many entries were handed over: the next one's position
        # The positions of the entries the journal's outbox keeps, in its order (ascending:
        # the outbox keeps a run's entries in the order they were made), and of those never
        # to be kept.
        self._kept: list[int] = []
        self._never: set[int] = set()
        # Asked at each entry and before each batch (in the task's context): whether the
        # run's lease was lost. Then the writer halts.
        self._fenced_out = fenced_out
        self._halted = False
        self._dropped = 0  # entries a halt left unwritten

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

    @property
    def kept(self) -> int:
        """How many of its entries the journal's outbox keeps (written or not)."""
        return len(self._kept)

    @property
    def kept_logged(self) -> int:
        """How many of the oldest entries the journal keeps the log has taken: those to let
        go of now."""
        return bisect.bisect_left(self._kept, self._acked)

    @property
    def halted(self) -> bool:
        """Whether the writer stopped for good: its run's lease was lost (`halt`)."""
        return self._halted

    @property
    def dropped(self) -> int:
        """How many entries a halt left unwritten (queued, or handed over after it)."""
        return self._dropped

    def add(
        self, action: str, actor: str, payload: Mapping[str, Any], kept: Kept = Kept.NOT_YET
    ) -> None:
        """Queue one entry behind the run's earlier ones; raises an earlier append's error
        (the entry is then unwritten, with those before it). `kept`: whether the journal
        keeps it already (`Kept.ALREADY`, after those it kept before) or must never keep it.
        Once the run's lease is lost the entry is dropped (`halt`)."""
        if self._stopped():
            self._dropped += 1
            return
        position, self._count = self._count, self._count + 1
        if kept is Kept.ALREADY:
            self._kept.append(position)
        elif kept is Kept.NEVER:
            self._never.add(position)
        if self._error is not None:
            self._unwritten.append((action, actor, payload))
            raise self._error
        self._pending.append((action, actor, payload))
        if self._task is None and len(self._pending) >= EAGER_BATCH:
            self._start()

    def _start(self) -> None:
        task = self._task = asyncio.get_running_loop().create_task(self._drain())
        task.add_done_callback(_retrieved)

    def let_go(self, count: int) -> None:
        """The journal let go of the `count` oldest entries it kept (the log has them)."""
        del self._kept[:count]

    def halt(self) -> None:
        """The run's lease was lost (a zombie): nothing queued, nor handed over later, is
        written; nothing is kept, nor let go of (the run is another worker's). An append
        under way is not called back: `written()` waits for it to end."""
        if not self._halted:
            self._halted = True
            self._dropped += len(self._pending) + len(self._unwritten)
            self._pending, self._unwritten, self._kept = [], [], []

    def _stopped(self) -> bool:
        if not self._halted and self._fenced_out is not None and self._fenced_out():
            self.halt()
        return self._halted

    def outbox_change(self) -> tuple[list[Entry], int]:
        """What the journal's outbox needs on the run's way out, to hold exactly what the log
        did not take, in the run's order: the entries to keep (after those kept) and then how
        many of the oldest kept to let go of. The kept ones the log took are let go of; the
        unwritten ones not kept yet are kept after. An unwritten entry made before one kept
        already (an outage in the batch before a run's kept end) is kept again with all the
        unwritten after it, in order, and the old copies let go of."""
        acked = self._acked
        done = bisect.bisect_left(self._kept, acked)  # kept, and in the log
        waiting = self._kept[done:]  # kept, not in the log (unwritten)
        kept = set(waiting)
        unwritten = [
            (at, entry) for at, entry in enumerate(self._unwritten, acked) if at not in self._never
        ]
        fresh = [(at, entry) for at, entry in unwritten if at not in kept]
        if waiting and fresh and fresh[0][0] < waiting[-1]:
            return [entry for _, entry in unwritten], done + len(waiting)
        return [entry for _, entry in fresh], done

    async def written(self) -> None:
        """Wait until every entry queued so far is appended; raises the first failure (not
        once halted). A caller cancelled meanwhile leaves the appends to finish on their own."""
        if self._task is None and self._pending and not self._halted:
            self._start()
        task = self._task
        if task is not None:
            await asyncio.shield(task)
        if self._error is not None and not self._halted:
            raise self._error

    async def _drain(self) -> None:
        try:
            while self._pending and not self._stopped():
                batch, self._pending = self._pending, []
                self._sent = 0
                try:
                    await self._write(batch)
                except BaseException as err:  # kept for `written` and the next `add`
                    self._error = err
                    if self._halted:  # the run is another worker's: nothing is kept
                        raise
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
        # The run stopped (ended, or was cut off: not necessarily over); what the log did
        # not take is kept in its journal next (`keep_unwritten`).
        _log.warning(
            "audit entries of a stopping run could not be written; its journal keeps them",
            exc_info=True,
        )


async def restore_kept(writer: AuditWriter, runtime: object) -> None:
    """At a run's resume, before any entry of its own (`writer` has none yet): the entries
    its journal keeps (an `AuditOutbox`: cut off its earlier attempts by outages, or the
    `run_completed` kept with its end) are written behind an `audit_restored` marker; once
    the log has them all, the journal lets go of them. An outage meanwhile is raised (the
    resume stops) and they stay kept, once (`keep_unwritten` keeps none of them again)."""
    if not isinstance(runtime, AuditOutbox):
        return
    kept = await runtime.kept_audit_entries(writer.run_id)
    if not kept:
        return
    marker = trail.audit_restored(len(kept))
    writer.add(AuditAction.AUDIT_RESTORED, trail.RUNTIME_ACTOR, marker, Kept.NEVER)
    for action, actor, payload in kept:
        writer.add(action, actor, payload, Kept.ALREADY)
    await writer.written()
    if writer.halted:  # the lease was lost: the run's new owner writes them
        return
    # A crash (or a journal out of reach) before this is done writes them again at the next
    # resume: twice in the log rather than not at all.
    await runtime.drop_audit_entries(writer.run_id, len(kept))
    writer.let_go(len(kept))


async def keep_unwritten(
    writer: AuditWriter | None, runtime: object, fence: Lease | None = None
) -> None:
    """On a run's way out: what its audit log could not take is kept in its journal (an
    `AuditOutbox`), after what the journal keeps already, for its resume to write; of the
    entries the journal kept already (a restore's, the run's end), those the log took are
    let go of, the others stay (`AuditWriter.outbox_change`). Fenced with `fence` (the run's
    lease, when let go of already), else the task's. A journal out of reach too: logged, and
    the entries are lost. Runs to its end even when the caller cancels again. Nothing to do
    (no read, no write) when every entry went in and none is kept; nor for a halted writer
    (its run's lease was lost), whose dropped entries are logged."""
    if writer is None:
        return
    if writer.halted:
        if writer.dropped:
            _log.warning(
                "run %s: its lease was lost (another worker owns the run): %d audit entries "
                "it made are not written",
                writer.run_id,
                writer.dropped,
            )
        return
    if not (writer.unwritten() or writer.kept):
        return
    if isinstance(runtime, AuditOutbox):
        await finished(_keep(writer, runtime, fence))


async def _keep(writer: AuditWriter, outbox: AuditOutbox, fence: Lease | None) -> None:
    fresh, done = writer.outbox_change()
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

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
not written (the log keeps the run's order).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from loomgraph.protocols import AuditLog
from loomgraph.protocols.tasks import finished

_log = logging.getLogger(__name__)

Entry = tuple[str, str, Mapping[str, Any]]
"""One entry to write: its action, its actor, its payload."""


class AuditWriter:
    """One run's pending audit entries and the task that writes them."""

    __slots__ = ("_error", "_log", "_pending", "_run_id", "_task", "_user_id")

    def __init__(self, log: AuditLog, run_id: str, user_id: str | None) -> None:
        self._log, self._run_id, self._user_id = log, run_id, user_id
        self._pending: list[Entry] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def add(self, action: str, actor: str, payload: Mapping[str, Any]) -> None:
        """Queue one entry behind the run's earlier ones; raises an earlier append's error."""
        if self._error is not None:
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
                try:
                    await self._write(batch)
                except BaseException as err:  # kept for `written` and the next `add`
                    self._error = err
                    self._pending.clear()
                    raise
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

"""A process simulated in-process, for crash properties: it dies (raises `Crash`, a
BaseException no layer catches) before or after its Nth journal write or ledger transaction,
then refuses every journal, ledger, audit, model and tool call, as a killed process would.
Its journal, ledger and audit log are wrapped (`DyingRuntime`, `DyingLedger`, `DyingAudit`);
a model or tool of the test's checks `PROC.get().alive()` itself."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from loomgraph.errors import ServiceUnavailable
from loomgraph.observability import FileAuditLog


class Crash(BaseException):
    """The simulated death of a process."""


PROC: contextvars.ContextVar[Proc | None] = contextvars.ContextVar("gov_proc", default=None)
JOURNAL_WRITES = frozenset(
    {"start_run", "begin_effect", "end_effect", "append_transition", "finish_run"}
)


class Proc:
    """A simulated process: dies before or after its Nth journal write or ledger
    transaction, then refuses every journal, ledger, audit, model and tool call. Dead after a
    call, the call raises; or, when it `lingers`, returns, and the next call raises. With
    `outage`, it does not die: the Nth call raises `ServiceUnavailable` before it is made (a
    journal or ledger out of reach), once. `missed` lists the journal and ledger calls it did
    not make: the one it died (or met the outage) before, and those its tasks tried after;
    `cut` says whether either happened."""

    def __init__(
        self, crash: tuple[int, bool] | None, *, lingers: bool = False, outage: bool = False
    ) -> None:
        self.crash_at, self.after = crash if crash is not None else (None, False)
        self.lingers = lingers  # dead after a call: it returns, and the next one is refused
        self.outage = outage
        self.calls = 0
        self.dead = False
        self.cut = False
        self.missed: list[str] = []

    def alive(self, name: str = "") -> None:
        if self.dead:
            self.missed.append(name)
            raise Crash("the process is dead")

    async def point(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """A call the process may die at."""
        self.alive(fn.__name__)
        self.calls += 1
        crash = self.calls == self.crash_at
        if crash and (self.outage or not self.after):
            self.cut = True
            self.missed.append(fn.__name__)
            if self.outage:
                raise ServiceUnavailable(f"out of reach at call {self.calls}")
            self.dead = True
            raise Crash(f"before call {self.calls}")
        value = await fn(*args, **kwargs)
        if crash:
            self.dead = self.cut = True
            if not self.lingers:
                raise Crash(f"after call {self.calls}")
        return value

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        self.alive(fn.__name__)
        return await fn(*args, **kwargs)


class DyingRuntime:
    """A process's journal (its own SQLite connection, or the shared in-memory journal)."""

    def __init__(self, inner: Any, proc: Proc) -> None:
        self.inner, self.proc = inner, proc

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method  # lease_seconds and the like
        wrap = self.proc.point if name in JOURNAL_WRITES else self.proc.call

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await wrap(method, *args, **kwargs)

        return call


class DyingLedger:
    """A process's budget ledger (its own SQLite connection, or the shared in-memory one)."""

    def __init__(self, inner: Any, proc: Proc) -> None:
        self.inner, self.proc = inner, proc
        # Where the spending is kept, as a run's budget is pinned to it (a file's path).
        self.kept_at = getattr(inner, "kept_at", None)

    async def transact(self, scopes: Any, hold_id: Any, decide: Any) -> Any:
        return await self.proc.point(self.inner.transact, scopes, hold_id, decide)

    async def totals(self, scope: str) -> Any:
        return await self.proc.call(self.inner.totals, scope)

    async def holds(self, run_id: str | None = None) -> Any:
        return await self.proc.call(self.inner.holds, run_id)

    async def charges(self, run_id: str) -> Any:
        return await self.proc.call(self.inner.charges, run_id)

    async def run_clock(self, run_id: str, started_at: float, deadline: float | None) -> Any:
        return await self.proc.call(self.inner.run_clock, run_id, started_at, deadline)

    async def forget_run(self, run_id: str) -> None:
        await self.proc.call(self.inner.forget_run, run_id)

    async def close(self) -> None:
        """The test closes a process's connection when the process ends or dies."""


class DyingAudit:
    """The shared audit log, as one process sees it."""

    def __init__(self, inner: FileAuditLog, proc: Proc) -> None:
        self.inner, self.proc = inner, proc

    async def record(self, action: str, **kwargs: Any) -> None:
        await self.proc.call(self.inner.record, action, **kwargs)

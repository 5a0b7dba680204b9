"""Typed errors of the durable runtime journals; each names the file, server or run concerned."""

from __future__ import annotations

from loomgraph.errors import LoomgraphError, ServiceUnavailable
from loomgraph.protocols.runtime import UnknownRun
from loomgraph.protocols.stored_text import (  # (the journals index ids: `runtime.text`)
    MAX_ID_CHARS,
    id_length_problem,
)

__all__ = [
    "MAX_ID_CHARS",
    "JournalCorrupted",
    "JournalDamaged",
    "JournalEncodingError",
    "JournalError",
    "JournalIdError",
    "JournalUnavailable",
    "JournalVersionError",
    "LeaseLost",
    "RunConflict",
    "RunExists",
    "RunFinished",
    "RunPossiblyLost",
    "UnknownEffect",
    "UnknownRun",
]


class JournalError(LoomgraphError):
    """Base class of the errors a durable journal raises (UnknownRun is a KeyError instead)."""


class JournalCorrupted(JournalError):
    """The journal file is not a database, or its content is damaged; nothing was written."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"journal {where} is corrupted or not a loomgraph journal: {detail}")
        self.where = where
        self.detail = detail


class JournalDamaged(JournalCorrupted):
    """The journal file (or its `-wal`/`-shm`) is damaged: refused when opened, before anything
    was resumed or written. `integrity` is what `PRAGMA quick_check` said of the file."""

    def __init__(self, where: str, detail: str, integrity: str) -> None:
        JournalError.__init__(
            self,
            f"journal {where} is damaged: {detail} (quick_check: {integrity}); nothing was "
            "read or written",
        )
        self.where = where
        self.detail = detail
        self.integrity = integrity


class RunPossiblyLost(UnknownRun):
    """A run id not in a journal known to have lost committed transactions (a `-wal` lost
    after a crash, opened anyway with `accept_damage=True`): the run may have been lost."""

    def __init__(self, run_id: str, where: str, damage: str) -> None:
        UnknownRun.__init__(self, run_id)
        self.args = (
            f"run {run_id!r} is not in journal {where}, which lost committed transactions "
            f"({damage}): the run may have been lost",
        )
        self.where = where
        self.damage = damage


class JournalVersionError(JournalError):
    """The journal was written with a schema version this loomgraph does not read."""

    def __init__(self, where: str, found: str | int, supported: int) -> None:
        super().__init__(
            f"journal {where} has schema version {found}; this loomgraph reads version "
            f"{supported} only (upgrade loomgraph, or use another journal)"
        )
        self.where = where
        self.found = found
        self.supported = supported


class JournalUnavailable(JournalError, ServiceUnavailable):
    """The journal cannot be reached: unopenable file, wrong DSN, server down, lock timeout."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"journal {where} is unavailable: {detail}")
        self.where = where
        self.detail = detail


class JournalEncodingError(JournalError, TypeError):
    """A value to journal is not plain JSON (journals never pickle); nothing was written."""


class JournalIdError(JournalError, ValueError):
    """An id the journal cannot store as text (a NUL, a lone surrogate, too long to index:
    `protocols.id_length_problem`); nothing was written. `.field` names the column
    (`user_id`, `session_id`, ...), `.value` is the id given."""

    def __init__(self, field: str, value: str) -> None:
        shown = value if len(value) <= 80 else value[:79] + "…"
        if (too_long := id_length_problem(value)) is not None:
            why = too_long
        elif "\x00" in value:
            why = "a NUL character"
        else:
            why = "a lone surrogate (not valid Unicode text)"
        super().__init__(
            f"{field} {shown!r} cannot be journaled: it holds {why}; nothing was written"
        )
        self.field = field
        self.value = value


class RunConflict(JournalError):
    """Another writer got there first: a seq already recorded, or a run leased by another owner."""

    def __init__(
        self,
        run_id: str,
        detail: str,
        *,
        owner: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        super().__init__(f"run {run_id!r}: {detail}")
        self.run_id = run_id
        self.detail = detail
        self.owner = owner
        self.expires_at = expires_at


class RunExists(RunConflict):
    """A new run was given the id of a run the journal holds already; nothing was written,
    and the journaled run is as it was."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            run_id, "a run with this id is journaled already; a new run needs an id of its own"
        )


class LeaseLost(RunConflict):
    """The writer's fencing token is no longer the run's current one: another worker took
    the run over (or the lease was released). Nothing was written; stop working on the run."""

    def __init__(
        self, run_id: str, token: int, detail: str = "", *, owner: str | None = None
    ) -> None:
        super().__init__(
            run_id,
            detail or f"lease lost: fencing token {token} is no longer current; nothing written",
            owner=owner,
        )
        self.token = token


class RunFinished(RunConflict):
    """`finish_run` on a run whose status is final already: its status and result stay."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(run_id, f"already finished ({status}); its status and result stay")
        self.status = status


class UnknownEffect(JournalError, KeyError):
    """`end_effect` for a key whose intent was never journaled."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(f"run {run_id!r} has no effect with key {key!r}")
        self.run_id = run_id
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0])

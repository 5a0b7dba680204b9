"""The server's errors, and the one table from loomgraph's typed errors to HTTP statuses.

Every error answer is `{"error": {"type": ..., "message": ...}}`. A run the caller may not see
is 404 exactly as an unknown run is (never 403: that would confirm it exists).
"""

from __future__ import annotations

import logging
import secrets

from loomgraph.agent.checkpoints import (
    ApprovalRefused,
    ApprovalUsed,
    GraphChanged,
    ResumeError,
    RunOfAnotherAgent,
    ValueNotPending,
)
from loomgraph.agent.event_ids import BadEventId
from loomgraph.agent.resume_errors import AnswerNeeded
from loomgraph.agent.submitting import RunJobPending
from loomgraph.errors import InputTooLarge, LoomgraphError, ServiceUnavailable, StateError
from loomgraph.nodes.structured import OutputValidationError
from loomgraph.protocols import BudgetExceeded, UnknownRun
from loomgraph.runtime.errors import RunConflict, RunFinished

__all__ = [
    "BadRequest",
    "ClientGone",
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "ServeError",
    "TooLarge",
    "Unauthorized",
    "internal_message",
    "message_of",
    "status_of",
]

log = logging.getLogger("loomgraph.serve")


class ServeError(LoomgraphError):
    """An HTTP request the server refuses; `status` is the answer's status code."""

    status = 400
    kind = "bad_request"


class BadRequest(ServeError, ValueError):
    """A request that is not what the endpoint takes (not JSON, a wrong field type...)."""


class ClientGone(ServeError):
    """The client closed its connection before its request's body had all come: there is
    nobody to answer, and nothing of the server's own to log (it was a 500, "internal
    error", which anyone reaching the port could fill the log with)."""


class Unauthorized(ServeError):
    """No credentials, or credentials nobody has."""

    status = 401
    kind = "unauthorized"


class Forbidden(ServeError):
    """The caller may see the run but lacks the role to do this (approvals)."""

    status = 403
    kind = "forbidden"


class NotFound(ServeError):
    """No such run for this caller (unknown, or another user's), or no such page."""

    status = 404
    kind = "not_found"


class TooLarge(ServeError):
    """The request body is over the server's limit."""

    status = 413
    kind = "too_large"


class Conflict(ServeError):
    """The run is not in a state that allows this (driven elsewhere, already cancelled)."""

    status = 409
    kind = "run_conflict"


class Invalid(ServeError, ValueError):
    """A field of the body has the wrong type or value, or is missing."""

    status = 422
    kind = "validation"


# loomgraph's typed errors as (status, type), most specific first: the first match wins.
ERROR_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (ServeError, 0, ""),  # carries its own
    (UnknownRun, 404, "not_found"),
    (RunOfAnotherAgent, 404, "not_found"),  # as another user's run: not shown to exist
    (BadEventId, 400, "bad_request"),
    (ApprovalUsed, 409, "approval_used"),
    (ValueNotPending, 409, "value_refused"),  # a value for a question no longer asked
    (ApprovalRefused, 409, "approval_refused"),  # not pending (answered, never asked), expired
    (AnswerNeeded, 409, "answer_needed"),  # sent on without an answer a person may still give
    (GraphChanged, 409, "graph_changed"),
    (RunFinished, 409, "run_finished"),
    (RunConflict, 409, "run_conflict"),
    (RunJobPending, 409, "run_conflict"),  # an answer is queued, or a worker has the run
    (InputTooLarge, 413, "too_large"),
    (ResumeError, 422, "validation"),
    (StateError, 422, "validation"),
    (OutputValidationError, 422, "validation"),
    (BudgetExceeded, 429, "budget_exhausted"),
    # The journal, ledger or audit log cannot be reached now: the request may go through
    # later (answered with Retry-After), and a run it started stays to be resumed.
    (ServiceUnavailable, 503, "unavailable"),
    (LoomgraphError, 500, "internal"),
    (ValueError, 400, "bad_request"),
)


def status_of(err: BaseException) -> tuple[int, str]:
    """The status and error type an exception is answered with."""
    for cls, status, kind in ERROR_STATUS:
        if isinstance(err, cls):
            if isinstance(err, ServeError):
                return err.status, err.kind
            return status, kind
    return 500, "internal"


def message_of(err: BaseException) -> str:
    """What a client is told of an error: its text, less what only operators need (the
    host and process id of a lease's owner) or what the caller may not know (that a run of
    another agent exists)."""
    if isinstance(err, RunOfAnotherAgent):
        return f"no run {err.run_id!r}"
    if isinstance(err, RunConflict) and err.owner is not None:
        return f"run {err.run_id!r} is being driven by another process; try again later"
    return str(err)


def internal_message(err: BaseException, where: str) -> str:
    """What a client is told of a 500 (the server's fault, answering `where`, "GET /v1/runs"):
    an error id, and nothing of the exception, whose text may hold anything (a connection
    string and its password, a path); the exception is logged with its traceback under that
    id. A ServeError's own text, written for clients, is kept (`the page could not be
    rendered`)."""
    error_id = secrets.token_hex(6)
    log.exception("internal error (error id %s) answering %s", error_id, where, exc_info=err)
    said = str(err) if isinstance(err, ServeError) else "internal error"
    return f"{said} (error id {error_id}: the details are in the server's log)"

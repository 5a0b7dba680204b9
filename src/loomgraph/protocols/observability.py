"""Observability: tracing spans, telemetry, and the append-only audit log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from loomgraph.protocols.runtime import EffectStatus

__all__ = [
    "AuditAction",
    "AuditEntry",
    "AuditLog",
    "AuditMode",
    "AuditOutbox",
    "LinkableSpan",
    "OutcomeOutbox",
    "Span",
    "Telemetry",
]


class Span(Protocol):
    """The part of a tracing span loomgraph uses."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Attach one attribute."""
        ...


@runtime_checkable
class LinkableSpan(Protocol):
    """A span that can name itself and point to another, as OpenTelemetry's links do: how
    the run span of a resume (another process, days later) leads to the run's first one.

    `trace_parent` is the span's W3C `traceparent` (None: not recorded); `link_to` adds a
    link to the span another `trace_parent` named (a malformed one is ignored)."""

    def trace_parent(self) -> str | None:
        """This span's W3C `traceparent`, or None when it records nothing."""
        ...

    def link_to(self, trace_parent: str, attributes: Mapping[str, Any]) -> None:
        """Link this span to the span `trace_parent` names."""
        ...


@runtime_checkable
class Telemetry(Protocol):
    """Opens spans; `loom.run` → node → `chat {model}` / `execute_tool {tool}`.

    An optional `enabled = False` says the spans record nothing: a run then builds no span
    attributes (they arrive empty). A telemetry without the attribute is enabled."""

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Span]:
        """A span for the duration of a `with` block."""
        ...


class AuditAction(StrEnum):
    """The actions loomgraph records in the audit log (the log itself takes any string)."""

    RUN_STARTED = "run_started"
    RUN_COMPLETED = "run_completed"
    MODEL_CALL = "model_call"
    TOOL_REQUEST = "tool_request"
    TOOL_RESULT = "tool_result"
    PERMISSION_DECISION = "permission_decision"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL = "approval"
    POLICY_OVERRIDE = "policy_override"
    BUDGET_RESERVE = "budget_reserve"
    BUDGET_SETTLE = "budget_settle"
    BUDGET_RELEASE = "budget_release"
    BUDGET_BLOCK = "budget_block"
    TRANSITION = "transition"
    CRASH_RECOVERED = "crash_recovered"
    EFFECT_UNKNOWN = "effect_unknown_after_crash"
    DEAD_LETTER = "dead_letter"
    AUDIT_QUARANTINED = "audit_quarantined"
    # Before the entries an outage cut off a run's earlier attempt, written at its resume.
    AUDIT_RESTORED = "audit_restored"


@runtime_checkable
class AuditLog(Protocol):
    """An append-only record of what the agent did and who allowed it.

    Two optional attributes tune what a run records (see `AuditMode.of`): `enabled = False`
    (the no-op log) makes the run build no entry at all, and `capture_content = True` adds
    prompts, answers, tool arguments and tool output to the entries, which otherwise carry
    only hashes, names and counts.
    """

    async def record(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> None:
        """Append one entry."""
        ...

    async def close(self) -> None:
        """Release connections and file handles; the next use opens them again."""
        ...


# One audit entry a run made: its action, its actor, its payload (JSON-able).
AuditEntry = tuple[str, str, Mapping[str, Any]]


@runtime_checkable
class AuditOutbox(Protocol):
    """A run journal that keeps a run's audit entries its audit log could not take (an
    outage) until the run's resume writes them; its writes are fenced like the run's others.
    Optional: a journal without it keeps none."""

    async def keep_audit_entries(self, run_id: str, entries: Sequence[AuditEntry]) -> None:
        """Keep entries of a run, after those kept for it already."""
        ...

    async def kept_audit_entries(self, run_id: str) -> list[AuditEntry]:
        """The entries kept for a run, oldest first ([] for none, or an unknown run)."""
        ...

    async def drop_audit_entries(self, run_id: str, count: int) -> None:
        """Let go of the `count` oldest entries kept for a run."""
        ...


@runtime_checkable
class OutcomeOutbox(Protocol):
    """An `AuditOutbox` that keeps a run's entries in the transaction of an effect's outcome
    (the built-in journals); optional: with another outbox they are kept just before it."""

    async def end_effect_keeping(
        self,
        run_id: str,
        key: str,
        outcome: dict[str, Any],
        status: EffectStatus,
        entries: Sequence[AuditEntry],
    ) -> None:
        """Journal an effect's outcome and keep `entries` after the run's kept ones, at once."""
        ...


@dataclass(frozen=True, slots=True)
class AuditMode:
    """What a run records in its audit log, read once when the run starts."""

    enabled: bool = True
    content: bool = False

    @classmethod
    def of(cls, log: AuditLog) -> AuditMode:
        """The mode an audit log asks for through its optional `enabled` and
        `capture_content` attributes (a log with neither: enabled, no content)."""
        enabled = getattr(log, "enabled", True) is not False
        return cls(enabled, enabled and getattr(log, "capture_content", False) is True)

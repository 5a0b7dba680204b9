"""Observability: tracing spans, telemetry, and the append-only audit log."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = ["AuditAction", "AuditLog", "AuditMode", "Span", "Telemetry"]


class Span(Protocol):
    """The part of a tracing span loomgraph uses."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Attach one attribute."""
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

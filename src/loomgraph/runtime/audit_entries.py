"""A run's audit entry as the journals' audit outbox keeps it: one line of ASCII JSON text
(`runtime.audit_outbox` for the SQL journals; the in-memory journal keeps the same text)."""

from __future__ import annotations

import json

from loomgraph.protocols import AuditEntry
from loomgraph.runtime.errors import JournalEncodingError

__all__ = ["entry_from_text", "entry_text"]


def entry_text(entry: AuditEntry) -> str:
    """One entry as the outbox keeps it: ASCII JSON text (any column type takes it); a
    value JSON cannot hold becomes its str(), as the audit log writes it."""
    action, actor, payload = entry
    try:
        return json.dumps([action, actor, dict(payload)], separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError) as err:  # a cycle, a key JSON refuses
        raise JournalEncodingError(
            f"an audit entry ({action!r}) is not plain JSON: {err}"
        ) from None


def entry_from_text(text: str) -> AuditEntry:
    """An entry the outbox kept; ValueError when it is not one."""
    value = json.loads(text)
    if not (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and isinstance(value[2], dict)
    ):
        raise ValueError("a kept audit entry is not [action, actor, payload]")
    return value[0], value[1], value[2]

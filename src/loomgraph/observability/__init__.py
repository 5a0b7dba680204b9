"""Observability: a tamper-evident audit log and OpenTelemetry tracing and metrics.

Importing this package imports none of its modules: each name is imported on first use (a
run with the no-op defaults loads no audit chain, OpenTelemetry glue or Postgres code).
`OTelTelemetry` imports OpenTelemetry when built, `PostgresAuditLog` imports asyncpg when it
first connects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names

if TYPE_CHECKING:
    from ..protocols.semconv import (
        RUN_SPAN,
        LinkKind,
        chat_attributes,
        chat_span_name,
        messages_json,
        node_attributes,
        node_span_name,
        response_attributes,
        run_attributes,
        set_attributes,
        system_instructions_json,
        tool_attributes,
        tool_span_name,
        usage_attributes,
    )
    from .audit_chain import (
        GENESIS_HASH,
        AuditAction,
        AuditEntry,
        AuditHead,
        AuditLogError,
        AuditLogUnavailable,
        VerifyResult,
    )
    from .audit_key import DEFAULT_KEY_ENV, AuditConfigError, AuditKeyMissing, resolve_audit_key
    from .file_audit import FileAuditLog
    from .noop import NoAuditLog, NoTelemetry
    from .otel import OTelTelemetry
    from .otlp import OTLPTelemetry, otlp
    from .postgres_audit import PostgresAuditLog
    from .traced_span import TracedSpan

# Each public name and the module that defines it.
_MODULES = {
    "RUN_SPAN": "loomgraph.protocols.semconv",
    "LinkKind": "loomgraph.protocols.semconv",
    "chat_attributes": "loomgraph.protocols.semconv",
    "chat_span_name": "loomgraph.protocols.semconv",
    "messages_json": "loomgraph.protocols.semconv",
    "node_attributes": "loomgraph.protocols.semconv",
    "node_span_name": "loomgraph.protocols.semconv",
    "response_attributes": "loomgraph.protocols.semconv",
    "run_attributes": "loomgraph.protocols.semconv",
    "set_attributes": "loomgraph.protocols.semconv",
    "system_instructions_json": "loomgraph.protocols.semconv",
    "tool_attributes": "loomgraph.protocols.semconv",
    "tool_span_name": "loomgraph.protocols.semconv",
    "usage_attributes": "loomgraph.protocols.semconv",
    "GENESIS_HASH": "loomgraph.observability.audit_chain",
    "AuditAction": "loomgraph.observability.audit_chain",
    "AuditEntry": "loomgraph.observability.audit_chain",
    "AuditHead": "loomgraph.observability.audit_chain",
    "AuditLogError": "loomgraph.observability.audit_chain",
    "AuditLogUnavailable": "loomgraph.observability.audit_chain",
    "VerifyResult": "loomgraph.observability.audit_chain",
    "DEFAULT_KEY_ENV": "loomgraph.observability.audit_key",
    "AuditConfigError": "loomgraph.observability.audit_key",
    "AuditKeyMissing": "loomgraph.observability.audit_key",
    "resolve_audit_key": "loomgraph.observability.audit_key",
    "FileAuditLog": "loomgraph.observability.file_audit",
    "NoAuditLog": "loomgraph.observability.noop",
    "NoTelemetry": "loomgraph.observability.noop",
    "OTelTelemetry": "loomgraph.observability.otel",
    "TracedSpan": "loomgraph.observability.traced_span",
    "OTLPTelemetry": "loomgraph.observability.otlp",
    "otlp": "loomgraph.observability.otlp",
    "PostgresAuditLog": "loomgraph.observability.postgres_audit",
}


# `otlp` is also a submodule (OpenTelemetry itself is imported only when used): the name
# means the function.
__getattr__ = lazy_names(__name__, _MODULES, globals(), submodules=["otlp"])


__all__ = [
    "DEFAULT_KEY_ENV",
    "GENESIS_HASH",
    "RUN_SPAN",
    "AuditAction",
    "AuditConfigError",
    "AuditEntry",
    "AuditHead",
    "AuditKeyMissing",
    "AuditLogError",
    "AuditLogUnavailable",
    "FileAuditLog",
    "LinkKind",
    "NoAuditLog",
    "NoTelemetry",
    "OTLPTelemetry",
    "OTelTelemetry",
    "PostgresAuditLog",
    "TracedSpan",
    "VerifyResult",
    "chat_attributes",
    "chat_span_name",
    "messages_json",
    "node_attributes",
    "node_span_name",
    "otlp",
    "resolve_audit_key",
    "response_attributes",
    "run_attributes",
    "set_attributes",
    "system_instructions_json",
    "tool_attributes",
    "tool_span_name",
    "usage_attributes",
]

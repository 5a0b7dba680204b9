"""Observability: a tamper-evident audit log and OpenTelemetry tracing and metrics.

Importing this package loads neither OpenTelemetry nor asyncpg: `OTelTelemetry` imports
OpenTelemetry when built, `PostgresAuditLog` imports asyncpg when it first connects.
"""

from __future__ import annotations

from ..protocols.semconv import (
    RUN_SPAN,
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
    VerifyResult,
)
from .audit_key import DEFAULT_KEY_ENV, AuditConfigError, AuditKeyMissing, resolve_audit_key
from .file_audit import FileAuditLog
from .noop import NoAuditLog, NoTelemetry
from .otel import OTelTelemetry, TracedSpan
from .otlp import OTLPTelemetry, otlp
from .postgres_audit import PostgresAuditLog

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
    "FileAuditLog",
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

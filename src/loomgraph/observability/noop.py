"""The defaults: an audit log and a telemetry that do nothing, at (almost) no cost."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from ..protocols import Span, Usage


class NoAuditLog:
    """An AuditLog that records nothing."""

    __slots__ = ()

    enabled = False
    """Tells a run to build no audit entry at all (see `AuditMode.of`)."""

    async def record(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> None:
        """Discard the entry."""

    async def close(self) -> None:
        """Nothing to close."""


class _NoSpan:
    """A span and its own context manager; stateless, so one instance serves every call."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        """Discard the attribute."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None  # never swallows the exception


NO_SPAN = _NoSpan()
"""The shared no-op span, also usable as a context manager."""


class NoTelemetry:
    """A Telemetry that opens no spans; `span` returns one shared object, allocating nothing."""

    __slots__ = ()

    capture_content = False
    """Never record message content (lets callers skip serialising it)."""

    enabled = False
    """Tells a run to build no span attributes at all (see `RunScope.tracing`)."""

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Span]:
        """The shared no-op span."""
        return NO_SPAN

    def record_usage(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        operation: str = "chat",
    ) -> None:
        """Discard the usage."""

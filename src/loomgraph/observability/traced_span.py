"""The span `OTelTelemetry` hands its callers: content filtered, values coerced to what
OpenTelemetry takes, the attributes metrics are derived from remembered, and telemetry's own
failures reported (rate-limited) instead of raised."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..protocols.semconv import (
    CONTENT_ATTRIBUTES,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LOOM_COST_USD,
    error_type,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span as OTelSpan

# Span attributes remembered to derive metrics when the span ends.
_TRACKED = frozenset(
    {
        ERROR_TYPE,
        GEN_AI_OPERATION_NAME,
        GEN_AI_REQUEST_MODEL,
        GEN_AI_RESPONSE_MODEL,
        GEN_AI_PROVIDER_NAME,
        GEN_AI_TOOL_NAME,
        GEN_AI_USAGE_INPUT_TOKENS,
        GEN_AI_USAGE_OUTPUT_TOKENS,
        LOOM_COST_USD,
    }
)
_PRIMITIVES = (str, bool, int, float)
EXCEPTION_EVENT, EXCEPTION_TYPE = "exception", "exception.type"
_REPORT_EVERY = 60.0  # seconds between two log records of telemetry's own failures
_log = logging.getLogger("loomgraph.telemetry")


class Reporter:
    """Logs telemetry's own failures: the first at once, then at most one per
    `_REPORT_EVERY` seconds, counting those left out."""

    __slots__ = ("_missed", "_next")

    def __init__(self) -> None:
        self._next = 0.0
        self._missed = 0

    def report(self, what: str, err: Exception) -> None:
        """Log that `what` failed with `err`, unless one was logged less than a minute ago."""
        now = time.monotonic()
        if now < self._next:
            self._missed += 1
            return
        missed, self._missed = self._missed, 0
        self._next = now + _REPORT_EVERY
        more = f" ({missed} more since the last report)" if missed else ""
        _log.warning(
            "telemetry failed to %s: %s: %s; the run goes on without it%s",
            what,
            type(err).__name__,
            err,
            more,
            exc_info=err,
        )

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, or None (reported) when it raises."""
        try:
            return fn(*args)
        except Exception as err:
            self.report(what, err)
            return None


def _coerce(value: Any) -> Any:
    """A value OpenTelemetry accepts: a primitive, a homogeneous list of them, else JSON."""
    if value is None or isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, list | tuple):
        kinds = {type(item) for item in value}
        if len(kinds) <= 1 and kinds <= set(_PRIMITIVES):
            return list(value)
    return json.dumps(value, ensure_ascii=False, default=str)


class TracedSpan:
    """The span handed to callers: filters content, coerces values, remembers usage."""

    __slots__ = ("_capture", "_reporter", "_span", "seen")

    def __init__(
        self, span: OTelSpan, capture_content: bool, reporter: Reporter | None = None
    ) -> None:
        """Wrap `span`; content attributes are dropped unless `capture_content`."""
        self._span = span
        self._capture = capture_content
        self._reporter = Reporter() if reporter is None else reporter
        # The attributes metrics are derived from when the span ends (`_TRACKED`).
        self.seen: dict[str, Any] = {}

    @property
    def otel_span(self) -> OTelSpan:
        """The underlying OpenTelemetry span, for events, links and the like."""
        return self._span

    def set_attribute(self, key: str, value: Any) -> None:
        """Attach one attribute (content only with capture_content; None is ignored); an
        error setting it is logged, not raised."""
        if value is None or (not self._capture and key in CONTENT_ATTRIBUTES):
            return
        try:
            value = _coerce(value)
            if key in _TRACKED:
                self.seen[key] = value
            self._span.set_attribute(key, value)
        except Exception as err:
            self._reporter.report(f"set span attribute {key!r}", err)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Attach several attributes, each as `set_attribute` does (filtered, remembered)."""
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        """Add an event; its content attributes are dropped unless capture_content, as a
        span's are. An error adding it is logged, not raised."""
        try:
            self._span.add_event(name, self._event_attributes(attributes), timestamp)
        except Exception as err:
            self._reporter.report(f"add span event {name!r}", err)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an `exception` event: in full with capture_content, else its type only
        (a message or stack trace can quote what the run handled), as a failing span does."""
        try:
            if self._capture:
                kept = self._event_attributes(attributes)
                self._span.record_exception(exception, kept, timestamp, escaped)
                return
            kept = {**self._event_attributes(attributes), EXCEPTION_TYPE: error_type(exception)}
            self._span.add_event(EXCEPTION_EVENT, kept, timestamp)
        except Exception as err:
            self._reporter.report("record an exception on a span", err)

    def _event_attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        """An event's attributes as a span's are kept: coerced, None and (without capture)
        content dropped."""
        return {
            key: _coerce(value)
            for key, value in (attributes or {}).items()
            if value is not None and (self._capture or key not in CONTENT_ATTRIBUTES)
        }

    def trace_parent(self) -> str | None:
        """The span's W3C `traceparent` (`00-{trace id}-{span id}-{flags}`), or None when it
        records nothing (not sampled in, or a non-recording span)."""
        context = self._span.get_span_context()
        if not context.is_valid:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"

    def link_to(self, trace_parent: str, attributes: Mapping[str, Any]) -> None:
        """Link the span to the one `trace_parent` names; a malformed one is reported and
        left out, as any error of telemetry's own."""
        from opentelemetry.trace import get_current_span
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        try:
            carrier = {"traceparent": trace_parent}
            linked = get_current_span(TraceContextTextMapPropagator().extract(carrier))
            context = linked.get_span_context()
            if not context.is_valid:
                raise ValueError(f"not a W3C traceparent: {trace_parent[:80]!r}")
            self._span.add_link(context, self._event_attributes(attributes))
        except Exception as err:
            self._reporter.report("link a span", err)

    def __getattr__(self, name: str) -> Any:
        """Everything else (set_status, add_link, ...) goes to the OpenTelemetry span; the
        calls that attach attributes or events go through the content filter above."""
        return getattr(self._span, name)

"""Telemetry on OpenTelemetry: spans with GenAI attributes, token, cost and duration metrics.

OpenTelemetry is imported when an OTelTelemetry is built, not when this module is, so
`import loomgraph.observability` stays cheap for programs that never trace.

Telemetry never fails a run: an error raised by the OpenTelemetry calls made here (a span
processor's `on_start`/`on_end`, a tracer, a meter) is logged on the `loomgraph.telemetry`
logger, at most once a minute per OTelTelemetry, and the run goes on untraced.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import error_summary
from ..protocols import RunStopped, Span, Usage
from ..protocols.semconv import (
    CONTENT_ATTRIBUTES,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_TOKEN_TYPE,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LOOM_COST_USD,
    METRIC_COST,
    METRIC_OPERATION_DURATION,
    METRIC_TOKEN_USAGE,
    OP_CHAT,
    error_type,
)
from ..protocols.tasks import stops_the_task

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span as OTelSpan
    from opentelemetry.trace import TracerProvider

# Bucket boundaries the GenAI metric conventions recommend.
_TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16, ... 67108864
_DURATION_BUCKETS = [0.01 * 2.0**i for i in range(14)]  # 0.01 s ... 81.92 s

# Span attributes remembered to derive metrics when the span ends.
_TRACKED = frozenset(
    {
        ERROR_TYPE,
        GEN_AI_OPERATION_NAME,
        GEN_AI_REQUEST_MODEL,
        GEN_AI_PROVIDER_NAME,
        GEN_AI_TOOL_NAME,
        GEN_AI_USAGE_INPUT_TOKENS,
        GEN_AI_USAGE_OUTPUT_TOKENS,
        LOOM_COST_USD,
    }
)
_PRIMITIVES = (str, bool, int, float)
# What may escape a span without it failing: an abandoned generator, and `RunStopped`, the
# control flow of a run that waits for an approval or a value (or is stopped by request). A
# cancel of the task is not a failure either (see `_span`).
_NOT_FAILURES = (GeneratorExit, RunStopped)
_EXCEPTION_EVENT, _EXCEPTION_TYPE = "exception", "exception.type"
_REPORT_EVERY = 60.0  # seconds between two log records of telemetry's own failures
_log = logging.getLogger("loomgraph.telemetry")


class _Reporter:
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

    __slots__ = ("_capture", "_reporter", "_seen", "_span")

    def __init__(
        self, span: OTelSpan, capture_content: bool, reporter: _Reporter | None = None
    ) -> None:
        """Wrap `span`; content attributes are dropped unless `capture_content`."""
        self._span = span
        self._capture = capture_content
        self._reporter = _Reporter() if reporter is None else reporter
        self._seen: dict[str, Any] = {}

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
                self._seen[key] = value
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
            kept = {**self._event_attributes(attributes), _EXCEPTION_TYPE: error_type(exception)}
            self._span.add_event(_EXCEPTION_EVENT, kept, timestamp)
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

    def __getattr__(self, name: str) -> Any:
        """Everything else (set_status, add_link, ...) goes to the OpenTelemetry span; the
        calls that attach attributes or events go through the content filter above."""
        return getattr(self._span, name)


class OTelTelemetry:
    """A Telemetry that opens OpenTelemetry spans and records GenAI metrics.

    Spans with `gen_ai.operation.name` also record `gen_ai.client.operation.duration`;
    a `chat` span whose usage attributes were set records token usage and cost when it
    ends, so callers need not call `record_usage` for it.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool = False,
    ) -> None:
        """Use the given providers (the global ones when None)."""
        from opentelemetry import context, metrics, trace
        from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

        version = _loomgraph_version()
        self.capture_content = capture_content
        self._reporter = _Reporter()
        self._invalid = INVALID_SPAN  # stands in for a span that could not be started
        self._attach = lambda span: context.attach(trace.set_span_in_context(span))
        self._detach = context.detach
        self._tracer = trace.get_tracer("loomgraph", version, tracer_provider=tracer_provider)
        meter = metrics.get_meter("loomgraph", version, meter_provider=meter_provider)
        self._kinds = (SpanKind.CLIENT, SpanKind.INTERNAL)
        self._error_status = (Status, StatusCode.ERROR)
        self._tokens = meter.create_histogram(
            METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            METRIC_COST, unit="USD", description="Cost of model calls in US dollars"
        )

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Span]:
        """A span, current for the `with` block; an exception marks it ERROR and propagates."""
        return self._span(name, attributes)

    @contextmanager
    def _span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
        client, internal = self._kinds
        # A model call leaves the process: CLIENT, as the conventions ask of `chat` spans.
        kind = client if attributes.get(GEN_AI_OPERATION_NAME) == OP_CHAT else internal
        report = self._reporter
        otel_span = report.call("start a span", self._start, name, kind) or self._invalid
        try:
            token = report.call("make the span current", self._attach, otel_span)
            try:
                span = TracedSpan(otel_span, self.capture_content, report)
                for key, value in attributes.items():
                    span.set_attribute(key, value)
                start = time.perf_counter()
                error: str | None = None
                try:
                    yield span
                except _NOT_FAILURES:
                    raise
                except BaseException as exc:
                    if stops_the_task(exc):
                        # The task was cancelled (its caller's choice, a time limit around
                        # it): OpenTelemetry leaves a cancelled operation's status unset. A
                        # CancelledError some code raised of its own is a failure.
                        raise
                    error = error_type(exc)
                    report.call("record an error on a span", self._failed, otel_span, exc, error)
                    raise
                finally:
                    seconds = time.perf_counter() - start
                    if error is None and ERROR_TYPE in span._seen:
                        # The caller said the operation failed (a run that ended `failed`).
                        error = str(span._seen[ERROR_TYPE])
                        report.call("set a span's error status", self._flagged, otel_span)
                    report.call(
                        "record span metrics", self._span_metrics, span._seen, seconds, error
                    )
            finally:
                if token is not None:
                    report.call("restore the context", self._detach, token)
        finally:
            report.call("end a span", otel_span.end)

    def _start(self, name: str, kind: Any) -> OTelSpan:
        # Exceptions are recorded by `_failed` (with error.type), not by the SDK a second time.
        return self._tracer.start_span(
            name, kind=kind, record_exception=False, set_status_on_exception=False
        )

    def _failed(self, otel_span: OTelSpan, exc: BaseException, error: str) -> None:
        status_cls, code = self._error_status
        if self.capture_content:
            otel_span.record_exception(exc)
            otel_span.set_status(status_cls(code, f"{type(exc).__name__}: {exc}"))
        else:
            # An exception's message and stack trace (its locals' reprs, the lines that raised)
            # can quote prompts, answers and tool arguments: only its type is recorded.
            otel_span.add_event(_EXCEPTION_EVENT, {_EXCEPTION_TYPE: error})
            otel_span.set_status(status_cls(code, error_summary(exc)))
        otel_span.set_attribute(ERROR_TYPE, error)

    def _flagged(self, otel_span: OTelSpan) -> None:
        status_cls, code = self._error_status
        otel_span.set_status(status_cls(code))

    def _span_metrics(self, seen: Mapping[str, Any], seconds: float, error: str | None) -> None:
        operation = seen.get(GEN_AI_OPERATION_NAME)
        if operation is None:
            return  # loom.node spans and custom spans: traced, not measured
        attrs: dict[str, Any] = {GEN_AI_OPERATION_NAME: operation}
        for key in (GEN_AI_REQUEST_MODEL, GEN_AI_PROVIDER_NAME, GEN_AI_TOOL_NAME):
            if key in seen:
                attrs[key] = seen[key]
        if error is not None:
            attrs[ERROR_TYPE] = error
        self._duration.record(seconds, attrs)
        if operation == OP_CHAT:
            # The attributes the span was given, zero counts included (they were reported).
            self._record(
                str(seen.get(GEN_AI_REQUEST_MODEL, "")),
                seen.get(GEN_AI_USAGE_INPUT_TOKENS),
                seen.get(GEN_AI_USAGE_OUTPUT_TOKENS),
                seen.get(LOOM_COST_USD),
                provider=seen.get(GEN_AI_PROVIDER_NAME),
                operation=OP_CHAT,
            )

    def record_usage(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        operation: str = OP_CHAT,
    ) -> None:
        """Record token usage and cost not already reported through a `chat` span (zero
        counts are not recorded: a `Usage` does not tell them from counts never reported);
        an error recording them is logged, not raised."""
        try:
            self._record(
                model,
                usage.prompt_tokens or None,  # cached ones included, as on a chat span
                usage.output_tokens or None,
                usage.cost_usd,
                provider=provider,
                operation=operation,
            )
        except Exception as err:
            self._reporter.report("record usage", err)

    def _record(
        self,
        model: str,
        input_tokens: Any,
        output_tokens: Any,
        cost: Any,
        *,
        provider: str | None,
        operation: str,
    ) -> None:
        attrs: dict[str, Any] = {GEN_AI_OPERATION_NAME: operation, GEN_AI_REQUEST_MODEL: model}
        if provider is not None:
            attrs[GEN_AI_PROVIDER_NAME] = provider
        for count, token_type in ((input_tokens, "input"), (output_tokens, "output")):
            if isinstance(count, int) and count >= 0:
                self._tokens.record(count, {**attrs, GEN_AI_TOKEN_TYPE: token_type})
        if isinstance(cost, int | float) and cost > 0:
            self._cost.add(float(cost), attrs)


def _loomgraph_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loomgraph")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"

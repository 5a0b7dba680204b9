"""Telemetry on OpenTelemetry: spans with GenAI attributes, token, cost and duration metrics.

OpenTelemetry is imported when an OTelTelemetry is built, not when this module is, so
`import loomgraph.observability` stays cheap for programs that never trace.

Telemetry never fails a run: an error raised by the OpenTelemetry calls made here (a span
processor's `on_start`/`on_end`, a tracer, a meter) is logged on the `loomgraph.telemetry`
logger, at most once a minute per OTelTelemetry, and the run goes on untraced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import error_summary
from ..protocols import RunStopped, Span, Usage
from ..protocols.semconv import (
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
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
from .content_flag import content_flag
from .traced_span import EXCEPTION_EVENT, EXCEPTION_TYPE, Reporter, TracedSpan

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span as OTelSpan
    from opentelemetry.trace import TracerProvider

# The span attributes a span's metric points carry (the conventions' required and
# recommended ones; `error.type` is added when the operation failed).
_METRIC_ATTRIBUTES = (
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_TOOL_NAME,
)
# Bucket boundaries the GenAI metric conventions recommend.
_TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16, ... 67108864
_DURATION_BUCKETS = [0.01 * 2.0**i for i in range(14)]  # 0.01 s ... 81.92 s

# What may escape a span without it failing: an abandoned generator, and `RunStopped`, the
# control flow of a run that waits for an approval or a value (or is stopped by request). A
# cancel of the task is not a failure either (see `_span`).
_NOT_FAILURES = (GeneratorExit, RunStopped)


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
        self.capture_content = content_flag(capture_content)
        self._reporter = Reporter()
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
                    if error is None and ERROR_TYPE in span.seen:
                        # The caller said the operation failed (a run that ended `failed`).
                        error = str(span.seen[ERROR_TYPE])
                        report.call("set a span's error status", self._flagged, otel_span)
                    report.call(
                        "record span metrics", self._span_metrics, span.seen, seconds, error
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
            otel_span.add_event(EXCEPTION_EVENT, {EXCEPTION_TYPE: error})
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
        for key in _METRIC_ATTRIBUTES:
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
                response_model=seen.get(GEN_AI_RESPONSE_MODEL),
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
        response_model: str | None = None,
    ) -> None:
        attrs: dict[str, Any] = {GEN_AI_OPERATION_NAME: operation, GEN_AI_REQUEST_MODEL: model}
        if provider is not None:
            attrs[GEN_AI_PROVIDER_NAME] = provider
        if response_model is not None:
            attrs[GEN_AI_RESPONSE_MODEL] = response_model
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

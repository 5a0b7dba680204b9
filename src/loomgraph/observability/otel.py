"""Telemetry on OpenTelemetry: spans with GenAI attributes, token, cost and duration metrics.

OpenTelemetry is imported when an OTelTelemetry is built, not when this module is, so
`import loomgraph.observability` stays cheap for programs that never trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from ..protocols import Span, Usage
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
)

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


def _coerce(value: Any) -> Any:
    """A value OpenTelemetry accepts: a primitive, a homogeneous list of them, else JSON."""
    if value is None or isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, list | tuple):
        kinds = {type(item) for item in value}
        if len(kinds) <= 1 and kinds <= set(_PRIMITIVES):
            return list(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _error_type(exc: BaseException) -> str:
    """`error.type` per the conventions: the exception's fully qualified class name."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


class TracedSpan:
    """The span handed to callers: filters content, coerces values, remembers usage."""

    __slots__ = ("_capture", "_seen", "_span")

    def __init__(self, span: OTelSpan, capture_content: bool) -> None:
        """Wrap `span`; content attributes are dropped unless `capture_content`."""
        self._span = span
        self._capture = capture_content
        self._seen: dict[str, Any] = {}

    @property
    def otel_span(self) -> OTelSpan:
        """The underlying OpenTelemetry span, for events, links and the like."""
        return self._span

    def set_attribute(self, key: str, value: Any) -> None:
        """Attach one attribute (content only with capture_content; None is ignored)."""
        if value is None or (not self._capture and key in CONTENT_ATTRIBUTES):
            return
        value = _coerce(value)
        if key in _TRACKED:
            self._seen[key] = value
        self._span.set_attribute(key, value)

    def __getattr__(self, name: str) -> Any:
        """Everything else (add_event, set_status, ...) goes to the OpenTelemetry span."""
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
        from opentelemetry import metrics, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        version = _loomgraph_version()
        self.capture_content = capture_content
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
        # Exceptions are recorded below (with error.type), not by the SDK a second time.
        with self._tracer.start_as_current_span(
            name, kind=kind, record_exception=False, set_status_on_exception=False
        ) as otel_span:
            span = TracedSpan(otel_span, self.capture_content)
            for key, value in attributes.items():
                span.set_attribute(key, value)
            start = time.perf_counter()
            error: str | None = None
            try:
                yield span
            except GeneratorExit:
                raise  # an abandoned generator, not a failure
            except BaseException as exc:
                error = _error_type(exc)
                status_cls, code = self._error_status
                otel_span.record_exception(exc)
                otel_span.set_status(status_cls(code, f"{type(exc).__name__}: {exc}"))
                otel_span.set_attribute(ERROR_TYPE, error)
                raise
            finally:
                self._span_metrics(span._seen, time.perf_counter() - start, error)

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
        counts are not recorded: a `Usage` does not tell them from counts never reported)."""
        self._record(
            model,
            usage.input_tokens or None,
            usage.output_tokens or None,
            usage.cost_usd,
            provider=provider,
            operation=operation,
        )

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

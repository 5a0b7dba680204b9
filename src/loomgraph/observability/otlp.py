"""Export spans and metrics over OTLP/HTTP: `otlp(endpoint)` is an `OTelTelemetry` whose
providers send to a collector (`http://127.0.0.1:4318`, as an agent file's
`telemetry: {otlp_endpoint: ...}` names it).

The exporter package (`opentelemetry-exporter-otlp-proto-http`) is imported only here, when
`otlp` is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .otel import OTelTelemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "loomgraph"


class OTLPTelemetry(OTelTelemetry):
    """An OTelTelemetry with its own exporting providers; `flush` sends what is pending,
    `shutdown` flushes and stops them."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        capture_content: bool = False,
    ) -> None:
        """Trace and measure through these (exporting) providers."""
        super().__init__(tracer_provider, meter_provider, capture_content)
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send every finished span and the current metrics now; False if it timed out."""
        millis = int(timeout_s * 1000)
        spans = bool(self.tracer_provider.force_flush(millis))
        metrics = bool(self.meter_provider.force_flush(millis))
        return spans and metrics

    def shutdown(self) -> None:
        """Flush, then stop the exporters (at the end of the program)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def otlp(
    endpoint: str,
    *,
    capture_content: bool = False,
    headers: Mapping[str, str] | None = None,
    service_name: str = SERVICE_NAME,
    metric_interval_s: float = 60.0,
) -> OTLPTelemetry:
    """Telemetry exported over OTLP/HTTP to `endpoint` (the collector's base URL; traces go
    to `/v1/traces`, metrics to `/v1/metrics`). Content (messages, tool arguments and
    results) is recorded only with `capture_content=True`."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    base = endpoint.rstrip("/")
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=dict(headers or {}))
        )
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=dict(headers or {})),
        export_interval_millis=metric_interval_s * 1000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return OTLPTelemetry(tracer_provider, meter_provider, capture_content)

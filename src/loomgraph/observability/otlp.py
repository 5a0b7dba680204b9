"""Export spans and metrics over OTLP/HTTP: `otlp(endpoint)` is an `OTelTelemetry` whose
providers send to a collector (`http://127.0.0.1:4318`, as an agent file's
`telemetry: {otlp_endpoint: ...}` names it).

The exporter package (`opentelemetry-exporter-otlp-proto-http`) is imported only here, when
`otlp` is called.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .otel import OTelTelemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "loomgraph"
EXPORT_TIMEOUT_S = 10.0  # the exporters' own default: one export, retries included


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
        self._flushing: _Flush | None = None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send every finished span and the current metrics now; False if that did not end
        within `timeout_s` (it goes on in the background, bounded by the export timeout) or
        failed."""
        deadline = time.monotonic() + timeout_s
        previous = self._flushing
        if previous is not None:
            # One that timed out is still sending: wait for it rather than queue a second.
            previous.join(max(deadline - time.monotonic(), 0.0))
            if previous.is_alive():
                return False
        # The SDK's batch span processor ignores a flush's timeout (it waits for the export,
        # which only the exporter's own timeout bounds): the flush runs in a thread of its
        # own, waited for until the deadline.
        flushing = self._flushing = _Flush(self, deadline)
        flushing.start()
        flushing.join(max(deadline - time.monotonic(), 0.0))
        return not flushing.is_alive() and flushing.ok

    def shutdown(self) -> None:
        """Flush, then stop the exporters (at the end of the program)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


class _Flush(threading.Thread):
    """One flush of an OTLPTelemetry's providers, in a thread its caller need not wait for."""

    def __init__(self, telemetry: OTLPTelemetry, deadline: float) -> None:
        super().__init__(name="loomgraph-otlp-flush", daemon=True)
        self.telemetry = telemetry
        self.deadline = deadline
        self.ok = False

    def run(self) -> None:
        """Flush spans, then metrics, each with what is left of the deadline."""
        telemetry, results = self.telemetry, []
        try:
            for provider in (telemetry.tracer_provider, telemetry.meter_provider):
                millis = max(int((self.deadline - time.monotonic()) * 1000), 0)
                results.append(bool(provider.force_flush(millis)))
        except Exception as err:  # a metric reader that failed: reported, flush is False
            telemetry._reporter.report("flush", err)
            return
        self.ok = all(results)


def otlp(
    endpoint: str,
    *,
    capture_content: bool = False,
    headers: Mapping[str, str] | None = None,
    service_name: str = SERVICE_NAME,
    metric_interval_s: float = 60.0,
    export_timeout_s: float = EXPORT_TIMEOUT_S,
) -> OTLPTelemetry:
    """Telemetry exported over OTLP/HTTP to `endpoint` (the collector's base URL; traces go
    to `/v1/traces`, metrics to `/v1/metrics`). Content (messages, tool arguments and
    results) is recorded only with `capture_content=True`. One export (its retries
    included) gives up after `export_timeout_s`: a collector that does not answer holds the
    exporting threads, `shutdown()` and a flush in the background no longer than that."""
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
    sent = dict(headers or {})
    spans = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=sent, timeout=export_timeout_s)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=sent, timeout=export_timeout_s),
        export_interval_millis=metric_interval_s * 1000,
        export_timeout_millis=export_timeout_s * 1000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return OTLPTelemetry(tracer_provider, meter_provider, capture_content)

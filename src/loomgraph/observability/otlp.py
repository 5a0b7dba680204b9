"""Export spans and metrics over OTLP/HTTP: `otlp(endpoint)` is an `OTelTelemetry` whose
providers send to a collector (`http://127.0.0.1:4318`, as an agent file's
`telemetry: {otlp_endpoint: ...}` names it).

The exporter package (`opentelemetry-exporter-otlp-proto-http`) is imported only here, when
`otlp` is called.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .otel import OTelTelemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "loomgraph"
EXPORT_TIMEOUT_S = 10.0  # the exporters' own default: one export, retries included
# What the program's end waits for the exporters: a collector that is down costs the exit no
# more (the SDK's own exit handler waited for every retry of both exporters).
EXIT_TIMEOUT_S = 3.0

_log = logging.getLogger("loomgraph.telemetry")


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
        self._flushing: _Bounded | None = None
        self._stopping: _Bounded | None = None

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
        flushing = self._flushing = _Bounded("flush", lambda: self._flush_all(deadline), self)
        return flushing.ran_by(deadline)

    def _flush_all(self, deadline: float) -> bool:
        """Flush spans, then metrics, each with what is left of the deadline."""
        results = []
        for provider in (self.tracer_provider, self.meter_provider):
            millis = max(int((deadline - time.monotonic()) * 1000), 0)
            results.append(bool(provider.force_flush(millis)))
        return all(results)

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Flush, then stop the exporters (at the end of the program); False if that did not
        end within `timeout_s` (it goes on in a daemon thread, which does not hold the exit)."""
        deadline = time.monotonic() + timeout_s
        if self._stopping is not None:  # stopped once (by the caller, or at exit): waited for
            self._stopping.join(timeout_s)
            return not self._stopping.is_alive() and self._stopping.ok
        # The providers' shutdown exports what is pending, bounded only by the exporters'
        # own timeouts (retries included): a dead collector would hold the program's end.
        self._stopping = _Bounded("shutdown", self._stop_all, self)
        return self._stopping.ran_by(deadline)

    def shutdown_at_exit(self, timeout_s: float, endpoint: str) -> None:
        """`shutdown` within `timeout_s`, saying once on the `loomgraph.telemetry` logger
        when what the exporters held was not all sent to `endpoint` by then."""
        if not self.shutdown(timeout_s):
            _log.warning(
                "telemetry: what was left to export was not all sent to %s within %s s of "
                "the program's end (is the collector running?)",
                endpoint,
                timeout_s,
            )

    def _stop_all(self) -> bool:
        """Stop the span provider, then the metric provider (each exports what it holds)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        return True


class _Bounded(threading.Thread):
    """One flush or shutdown of an OTLPTelemetry's providers, in a daemon thread its caller
    waits for only until a deadline."""

    def __init__(self, what: str, work: Callable[[], bool], telemetry: OTLPTelemetry) -> None:
        super().__init__(name=f"loomgraph-otlp-{what}", daemon=True)
        self.what, self.work, self.telemetry = what, work, telemetry
        self.ok = False

    def ran_by(self, deadline: float) -> bool:
        """Start; True if the work ended by `deadline` and succeeded."""
        self.start()
        self.join(max(deadline - time.monotonic(), 0.0))
        return not self.is_alive() and self.ok

    def run(self) -> None:
        """Do the work; an exporter or reader that failed is reported, and ok stays False."""
        try:
            self.ok = self.work()
        except Exception as err:
            self.telemetry._reporter.report(self.what, err)


def otlp(
    endpoint: str,
    *,
    capture_content: bool = False,
    headers: Mapping[str, str] | None = None,
    service_name: str | None = None,
    default_service_name: str = SERVICE_NAME,
    metric_interval_s: float = 60.0,
    export_timeout_s: float = EXPORT_TIMEOUT_S,
    exit_timeout_s: float = EXIT_TIMEOUT_S,
) -> OTLPTelemetry:
    """Telemetry exported over OTLP/HTTP to `endpoint` (the collector's base URL; traces go
    to `/v1/traces`, metrics to `/v1/metrics`). Content (messages, tool arguments and
    results) is recorded only with `capture_content=True`. One export (its retries
    included) gives up after `export_timeout_s`: a collector that does not answer holds the
    exporting threads, `shutdown()` and a flush in the background no longer than that. At
    the program's end the providers are shut down within `exit_timeout_s` (a warning when
    that was not enough), unless `shutdown()` was called before.

    `service.name` is `service_name` when given, else what the environment says
    (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), else `default_service_name`; the
    environment's other resource attributes are kept."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    base = endpoint.rstrip("/")
    resource = Resource.create({} if service_name is None else {"service.name": service_name})
    # The SDK names a service nobody named `unknown_service[:executable]`.
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service_name}))
    # Shut down at exit by the telemetry, within `exit_timeout_s`, not by the SDK's handlers.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    sent = dict(headers or {})
    spans = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=sent, timeout=export_timeout_s)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=sent, timeout=export_timeout_s),
        export_interval_millis=metric_interval_s * 1000,
        export_timeout_millis=export_timeout_s * 1000,
    )
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[reader], shutdown_on_exit=False
    )
    telemetry = OTLPTelemetry(tracer_provider, meter_provider, capture_content)
    atexit.register(telemetry.shutdown_at_exit, exit_timeout_s, base)
    return telemetry

"""Process-wide OpenTelemetry set-up from the standard ``OTEL_*`` variables."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


def _protocol() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")


def otlp_span_exporter() -> SpanExporter:
    """The OTLP span exporter for ``OTEL_EXPORTER_OTLP_PROTOCOL``.

    Over HTTP, saga's own (:mod:`saga.tracing.otlp_http`: the same requests, encoded for a
    fifth of the CPU), unless ``SAGA_OTEL_SDK_EXPORTER=true`` or one of the SDK's Python
    credential-provider variables asks for the SDK's; over gRPC, the SDK's.
    """
    env = os.environ
    if _protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    sdk = env.get("SAGA_OTEL_SDK_EXPORTER", "").lower() in ("1", "true", "yes") or any(
        name.startswith("OTEL_PYTHON_EXPORTER_OTLP_HTTP") for name in env
    )
    if not sdk:
        from saga.tracing.otlp_http import OTLPHTTPSpanExporter

        return OTLPHTTPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter()


def configure_from_env(default_service_name: str) -> bool:
    """Export over OTLP when the standard ``OTEL_*`` variables ask for it.

    Honours ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces/metrics specific ones),
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` or ``http/protobuf``), ``OTEL_SERVICE_NAME``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and ``OTEL_SDK_DISABLED``. Returns True when
    exporting. The tracer provider is a :class:`~saga.tracing.SagaTracerProvider`, so
    saga's own spans take their fast path.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not traces_endpoint:
        return False
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from saga.tracing.spans import SagaTracerProvider

    if _protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", default_service_name)})
    provider = SagaTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(otlp_span_exporter()))
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    return True


def shutdown() -> None:
    """Flush and stop exporters configured by :func:`configure_from_env`."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
    meter_provider = metrics.get_meter_provider()
    if hasattr(meter_provider, "shutdown"):
        meter_provider.shutdown()

"""OpenTelemetry spans, metrics and context propagation: one trace per saga.

The only module that imports OpenTelemetry. Spans follow Temporal's names:

* ``StartWorkflow:<type>`` on the client (the trace's root, or a child of the caller's span);
* ``RunWorkflow:<type>`` on the coordinator when the workflow starts;
* ``StartActivity:<name>`` when a step attempt is dispatched, and
  ``RunActivity:<name>`` on the worker for each attempt (a user's own spans nest in it);
* ``CompleteWorkflow:<type>`` when it ends, with ``saga.status``; ``FireTimer`` and
  ``Signal:<name>`` as short spans.

Workflow spans are short (a workflow may live for weeks, and a coordinator may die while it
does): the RunWorkflow span's context is stored in the history (``WorkflowStarted``), so
every later span — on any coordinator, after any restart — joins the same trace. Spans are
emitted only for new events, never on replay. Without configuration the OpenTelemetry API
is a no-op and costs next to nothing.

Carriers (the stored context, the task headers) are saga's own: always W3C ``traceparent``,
``tracestate`` and ``baggage``, written straight from the span context rather than through
the global propagator, and the caller's baggage travels with every hop down to the activity.
Counters are tallied in a dict and observed when a reader collects: an SDK counter's
``add`` costs more than the span it counts.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.failure import FailureInfo

Carrier = dict[str, str]

_TRACE_CONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()


class _Tally:
    """A monotonic counter summed in a dict, reported when a metric reader collects."""

    def __init__(self, meter: metrics.Meter, name: str, description: str) -> None:
        self._counts: dict[tuple[tuple[str, str], ...], int] = {}
        meter.create_observable_counter(name, callbacks=[self._observe], description=description)

    def add(self, amount: int, attributes: Mapping[str, str]) -> None:
        key = tuple(attributes.items())
        self._counts[key] = self._counts.get(key, 0) + amount

    def _observe(self, _: metrics.CallbackOptions) -> list[metrics.Observation]:
        # list() copies under the GIL: the reader's thread may collect while we add.
        return [metrics.Observation(n, dict(key)) for key, n in list(self._counts.items())]


class Telemetry:
    """Spans and metrics for one process (client, coordinator or worker)."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("saga", tracer_provider=tracer_provider)
        meter = metrics.get_meter("saga", meter_provider=meter_provider)
        self.workflows_started = _Tally(meter, "saga.workflows.started", "workflows started")
        self.workflows_closed = _Tally(
            meter, "saga.workflows.closed", "workflows ended, by saga.status"
        )
        self.activity_attempts = _Tally(
            meter, "saga.activity.attempts", "activity attempts run by workers"
        )
        self.activity_failures = _Tally(
            meter, "saga.activity.failures", "activity attempts that failed"
        )
        self.schedule_to_start = meter.create_histogram(
            "saga.activity.schedule_to_start",
            unit="ms",
            description="from dispatch to the start of the attempt on a worker",
        )
        self.step_latency = meter.create_histogram(
            "saga.activity.duration", unit="ms", description="attempt run time on the worker"
        )
        self._meter = meter

    def observe_outbox(self, backlog: Callable[[], int]) -> None:
        """Report the outbox backlog (tasks committed, not yet confirmed by the broker)."""

        def callback(_: metrics.CallbackOptions) -> list[metrics.Observation]:
            return [metrics.Observation(backlog())]

        self._meter.create_observable_gauge(
            "saga.outbox.backlog", callbacks=[callback], description="unsent outbox rows"
        )

    def observe_dead_letters(self, count: Callable[[], int]) -> None:
        """Report how many messages this process sent to the dead-letter queue."""

        def callback(_: metrics.CallbackOptions) -> list[metrics.Observation]:
            return [metrics.Observation(count())]

        self._meter.create_observable_counter(
            "saga.messages.dead_lettered",
            callbacks=[callback],
            description="messages that could not be processed, sent to the dead-letter queue",
        )

    # --- spans -------------------------------------------------------------------------------
    def _short(
        self,
        name: str,
        parent: Mapping[str, str] | None,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
        error: FailureInfo | None = None,
        *,
        propagate: bool = True,
    ) -> Carrier:
        span = self.tracer.start_span(
            name, context=_context_of(parent), kind=kind, attributes=attributes
        )
        if span.is_recording():
            if error is not None:
                _record_failure(span, error)
            span.end()
        # A span sampled out still names its trace, so its children are sampled out too.
        return _carrier(span, parent) if propagate else {}

    @contextlib.contextmanager
    def start_workflow(self, workflow_type: str, workflow_id: str) -> Iterator[Carrier]:
        """Client side: a span around the start; yields the context to store with it."""
        attributes = {"saga.workflow_type": workflow_type, "saga.workflow_id": workflow_id}
        with self.tracer.start_as_current_span(
            f"StartWorkflow:{workflow_type}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            baggage: Carrier = {}
            _BAGGAGE.inject(baggage)  # the caller's baggage, from the current context
            yield _carrier(span, baggage)
        self.workflows_started.add(1, {"saga.workflow_type": workflow_type})

    def run_workflow(
        self, parent: Mapping[str, str], workflow_type: str, workflow_id: str, run_id: str
    ) -> Carrier:
        """Coordinator: the workflow begins running; returns the context its spans join."""
        return self._short(
            f"RunWorkflow:{workflow_type}",
            parent,
            {
                "saga.workflow_type": workflow_type,
                "saga.workflow_id": workflow_id,
                "saga.run_id": run_id,
            },
        )

    def start_activity(
        self,
        parent: Mapping[str, str],
        *,
        activity: str,
        workflow_id: str,
        run_id: str,
        seq: int,
        attempt: int,
        queue: str,
        compensation: bool,
    ) -> Carrier:
        """Coordinator: an attempt is dispatched; returns the context for the task's headers."""
        return self._short(
            f"StartActivity:{activity}",
            parent,
            {
                "saga.activity": activity,
                "saga.workflow_id": workflow_id,
                "saga.run_id": run_id,
                "saga.seq": seq,
                "saga.attempt": attempt,
                "saga.queue": queue,
                "saga.compensation": compensation,
            },
            kind=SpanKind.PRODUCER,
        )

    def event(self, name: str, parent: Mapping[str, str], **attributes: Any) -> None:
        """Coordinator: a timer fired, a signal arrived."""
        attrs = {f"saga.{k}": v for k, v in attributes.items()}
        self._short(name, parent, attrs, propagate=False)

    def complete_workflow(
        self,
        parent: Mapping[str, str],
        *,
        workflow_type: str,
        workflow_id: str,
        run_id: str,
        status: str,
        error: FailureInfo | None,
    ) -> None:
        """Coordinator: the workflow reached a final status."""
        failed = status not in ("COMPLETED", "COMPENSATED", "CANCELLED")
        self._short(
            f"CompleteWorkflow:{workflow_type}",
            parent,
            {
                "saga.workflow_type": workflow_type,
                "saga.workflow_id": workflow_id,
                "saga.run_id": run_id,
                "saga.status": status,
            },
            error=error if failed else None,
            propagate=False,
        )
        self.workflows_closed.add(1, {"saga.workflow_type": workflow_type, "saga.status": status})

    @contextlib.contextmanager
    def run_activity(
        self,
        headers: Mapping[str, str],
        *,
        activity: str,
        workflow_id: str,
        run_id: str,
        seq: int,
        attempt: int,
        queue: str,
        compensation: bool,
        schedule_to_start_ms: float,
    ) -> Iterator[Callable[[FailureInfo | None], None]]:
        """Worker: the span of one attempt, current while the activity runs.

        Yields ``finish(failure)`` to record the outcome before the span ends.
        """
        attrs: dict[str, Any] = {
            "saga.activity": activity,
            "saga.workflow_id": workflow_id,
            "saga.run_id": run_id,
            "saga.seq": seq,
            "saga.attempt": attempt,
            "saga.queue": queue,
            "saga.compensation": compensation,
        }
        metric_attrs = {"saga.activity": activity, "saga.queue": queue}
        self.activity_attempts.add(1, metric_attrs)
        self.schedule_to_start.record(schedule_to_start_ms, metric_attrs)
        parent = _context_of(headers)
        span = self.tracer.start_span(
            f"RunActivity:{activity}", context=parent, kind=SpanKind.CONSUMER, attributes=attrs
        )

        def finish(failure: FailureInfo | None) -> None:
            if failure is not None:
                _record_failure(span, failure)
                self.activity_failures.add(1, {**metric_attrs, "saga.error_type": failure.type})

        # Current in the headers' context, so the activity sees the caller's baggage too.
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield finish
        finally:
            otel_context.detach(token)
            span.end()


def _carrier(span: Span, parent: Mapping[str, str] | None) -> Carrier:
    """W3C headers naming ``span``, carrying the parent's baggage on.

    Written straight from the span context: what the generic propagator writes, at half its
    cost. Without a valid span (the API is a no-op) the parent's context passes on as it is.
    """
    sc = span.get_span_context()
    if not sc.is_valid:
        return dict(parent or {})
    carrier = {"traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"}
    if sc.trace_state:
        carrier["tracestate"] = sc.trace_state.to_header()
    if parent and "baggage" in parent:
        carrier["baggage"] = parent["baggage"]
    return carrier


@functools.lru_cache(maxsize=4096)
def _extract(traceparent: str, tracestate: str, baggage: str) -> otel_context.Context:
    carrier = {"traceparent": traceparent, "tracestate": tracestate, "baggage": baggage}
    context = _TRACE_CONTEXT.extract({k: v for k, v in carrier.items() if v})
    return _BAGGAGE.extract(carrier, context) if baggage else context


def _context_of(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The context a stored carrier names; parsed once per distinct carrier."""
    if not carrier or "traceparent" not in carrier:
        return otel_context.Context()
    return _extract(
        carrier["traceparent"], carrier.get("tracestate", ""), carrier.get("baggage", "")
    )


def _record_failure(span: Span, failure: FailureInfo) -> None:
    span.set_status(Status(StatusCode.ERROR, failure.describe()[:500]))
    span.add_event(
        "exception",
        {
            "exception.type": failure.type,
            "exception.message": failure.message,
            "exception.stacktrace": failure.stack_trace,
        },
    )
    span.set_attribute("saga.error_type", failure.type)


def configure_from_env(default_service_name: str) -> bool:
    """Export over OTLP when the standard ``OTEL_*`` variables ask for it.

    Honours ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces/metrics specific ones),
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` or ``http/protobuf``), ``OTEL_SERVICE_NAME``,
    ``OTEL_TRACES_SAMPLER`` and ``OTEL_SDK_DISABLED``. Returns True when exporting.
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
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", default_service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
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

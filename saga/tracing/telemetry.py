"""Telemetry: the spans and metrics of one process (client, coordinator or worker)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import Event
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode

from saga.failure import FailureInfo
from saga.tracing.carrier import Carrier, carrier_of, context_of, current_baggage
from saga.tracing.spans import (
    UNSET,
    FinishedSpans,
    LiveSpan,
    SagaTracerProvider,
    exception_event,
)


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
    """Spans and metrics for one process (client, coordinator or worker).

    On a :class:`~saga.tracing.SagaTracerProvider` (what ``configure_from_env`` sets up)
    saga's own short spans take the fast path of :mod:`saga.tracing.spans`; on any other
    provider every span goes through the SDK's tracer.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("saga", tracer_provider=tracer_provider)
        provider = tracer_provider or trace.get_tracer_provider()
        self.finished = (
            FinishedSpans(provider) if isinstance(provider, SagaTracerProvider) else None
        )
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
        """A span that starts and ends now; returns the carrier naming it."""
        context = context_of(parent)
        if self.finished is not None:
            if error is None:
                sc = self.finished.instant(name, context, kind, attributes)
            else:
                attributes["saga.error_type"] = error.type
                status, events = _error_status(error), (_failure_event(error),)
                sc = self.finished.instant(name, context, kind, attributes, status, events)
        else:
            span = self.tracer.start_span(name, context=context, kind=kind, attributes=attributes)
            if span.is_recording():
                if error is not None:
                    _record_failure(span, error)
                span.end()
            sc = span.get_span_context()
        # A span sampled out still names its trace, so its children are sampled out too.
        return carrier_of(sc, parent) if propagate else {}

    @contextlib.contextmanager
    def start_workflow(self, workflow_type: str, workflow_id: str) -> Iterator[Carrier]:
        """Client side: a span around the start; yields the context to store with it."""
        attributes = {"saga.workflow_type": workflow_type, "saga.workflow_id": workflow_id}
        name = f"StartWorkflow:{workflow_type}"
        baggage = current_baggage()  # the caller's, passed on with every hop
        if self.finished is None:
            with self.tracer.start_as_current_span(
                name, kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                yield carrier_of(span.get_span_context(), baggage)
        else:
            yield from self._start_workflow_finished(name, attributes, baggage)
        self.workflows_started.add(1, {"saga.workflow_type": workflow_type})

    def _start_workflow_finished(
        self, name: str, attributes: dict[str, Any], baggage: Carrier
    ) -> Iterator[Carrier]:
        """StartWorkflow on the fast path, current (for spans the start makes) by its context."""
        assert self.finished is not None
        begun = self.finished.begin(name, otel_context.get_current(), SpanKind.CLIENT, attributes)
        status = UNSET
        events: tuple[Event, ...] = ()
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(begun.context)))
        try:
            yield carrier_of(begun.context, baggage)
        except Exception as exc:  # recorded as the SDK's use_span does, then raised on
            status = Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            events = (exception_event(exc),)
            raise
        finally:
            otel_context.detach(token)
            self.finished.end(begun, status, events)

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

        The user's code runs in it, and may set attributes or add events on it. Yields
        ``finish(failure)`` to record the outcome before it ends.
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
        parent = context_of(headers)
        name = f"RunActivity:{activity}"
        span: Span
        if self.finished is None:
            span = self.tracer.start_span(
                name, context=parent, kind=SpanKind.CONSUMER, attributes=attrs
            )
        else:
            begun = self.finished.begin(name, parent, SpanKind.CONSUMER, attrs)
            span = (
                LiveSpan(self.finished, begun)
                if begun.recording
                else NonRecordingSpan(begun.context)
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


def _error_status(failure: FailureInfo) -> Status:
    return Status(StatusCode.ERROR, failure.describe()[:500])


def _failure_event(failure: FailureInfo) -> Event:
    return Event(
        "exception",
        {
            "exception.type": failure.type,
            "exception.message": failure.message,
            "exception.stacktrace": failure.stack_trace,
        },
    )


def _record_failure(span: Span, failure: FailureInfo) -> None:
    span.set_status(_error_status(failure))
    event = _failure_event(failure)
    span.add_event(event.name, event.attributes)
    span.set_attribute("saga.error_type", failure.type)

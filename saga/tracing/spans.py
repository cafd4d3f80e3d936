"""Saga's own spans built finished: the fast path past the SDK's ``Span``.

Most of saga's spans start and end at once (RunWorkflow, StartActivity, CompleteWorkflow,
FireTimer, Signal) or wrap only saga's own code (StartWorkflow). Through the SDK each
costs a mutable ``Span`` (attribute validation, a lock, event and link lists, a
``ReadableSpan`` copy at ``end``): ~11 µs and a dozen objects for the garbage collector,
on sagas that cost ~1 ms of CPU. Here the provider's sampler decides as the SDK's tracer
would (parent-based sampling included, so a trace sampled out at the client stays out; the
SDK's default sampler is applied directly, without its result objects), and a recorded
span is built as the finished ``ReadableSpan`` the SDK would have made and handed to the
span processors' ``on_end``: ~4 µs. RunActivity, in which the user's code runs, is a
:class:`LiveSpan`: the trace API's span, finished the same way when it ends.

Only on a :class:`SagaTracerProvider`, whose processors saga knows: ``on_start`` is not
called for these spans, so a processor that acts when a span starts (to enrich it, say)
belongs on a plain SDK provider, where saga takes the SDK's path.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue

from saga.tracing.carrier import parent_of

UNSET = Status(StatusCode.UNSET)
# Trace flags by (sampled, random trace id), made once rather than per span.
_FLAGS = {
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
    )
    for sampled in (False, True)
    for random_id in (False, True)
}


class SagaTracerProvider(TracerProvider):
    """The SDK's tracer provider, with the span processors it was given in view.

    :func:`saga.tracing.configure_from_env` sets one up. Give it to
    :class:`~saga.tracing.Telemetry` yourself to keep saga's fast path with processors of
    your own, as long as they do nothing in ``on_start`` (the SDK's batch and simple
    processors do nothing there).
    """

    def __init__(
        self,
        sampler: Sampler | None = None,
        resource: Resource | None = None,
        id_generator: IdGenerator | None = None,
    ) -> None:
        super().__init__(sampler=sampler, resource=resource, id_generator=id_generator)
        self.span_processors: tuple[SpanProcessor, ...] = ()

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        """Register a processor, as the SDK does, and keep it for saga's finished spans."""
        super().add_span_processor(span_processor)
        self.span_processors += (span_processor,)


@dataclass(slots=True)
class Begun:
    """A span decided on but not yet ended: its context names it to children already."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    kind: SpanKind
    attributes: Any
    start: int
    recording: bool


class FinishedSpans:
    """Builds saga's spans as finished ``ReadableSpan`` objects for one provider."""

    def __init__(self, provider: SagaTracerProvider) -> None:
        self._provider = provider
        # What provider.get_tracer("saga") would name its spans' scope.
        self._scope = InstrumentationScope("saga", "")

    def _decide(
        self, name: str, context: otel_context.Context, kind: SpanKind, attributes: dict[str, Any]
    ) -> tuple[SpanContext, SpanContext | None, bool, Any]:
        """Name and sample a span under the parent ``context`` names, as the SDK's tracer does.

        Returns its context, its parent's (None for a root), whether it records, and the
        attributes the sampler gave it.
        """
        provider = self._provider
        ids = provider.id_generator
        parent: SpanContext | None = parent_of(context)
        if parent is not None and parent.is_valid:
            trace_id, random_id = parent.trace_id, parent.trace_flags.random_trace_id
        else:
            parent, trace_id, random_id = None, ids.generate_trace_id(), ids.is_trace_id_random()
        sampler = provider.sampler
        if sampler is DEFAULT_ON:
            # The SDK's default (parent-based, roots sampled) decided as it decides, without
            # the SamplingResult objects: a span follows its parent's decision.
            sampled = parent is None or parent.trace_flags.sampled
            recording, state = sampled, parent.trace_state if parent is not None else None
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recording = result.decision is not Decision.DROP
            attributes, state = result.attributes, result.trace_state  # type: ignore[assignment]
        flags = _FLAGS[sampled, random_id]
        span_context = SpanContext(trace_id, ids.generate_span_id(), False, flags, state)
        return span_context, parent, recording, attributes

    def begin(
        self, name: str, context: otel_context.Context, kind: SpanKind, attributes: dict[str, Any]
    ) -> Begun:
        """A span that starts now, under the parent ``context`` names; :meth:`end` ends it."""
        span_context, parent, recording, attrs = self._decide(name, context, kind, attributes)
        return Begun(name, span_context, parent, kind, attrs, time.time_ns(), recording)

    def instant(
        self,
        name: str,
        context: otel_context.Context,
        kind: SpanKind,
        attributes: dict[str, Any],
        status: Status = UNSET,
        events: tuple[Event, ...] = (),
    ) -> SpanContext:
        """A span that starts and ends now; returns its context."""
        span_context, parent, recording, attrs = self._decide(name, context, kind, attributes)
        if recording:
            now = time.time_ns()
            self._emit(
                ReadableSpan(
                    name,
                    span_context,
                    parent,
                    self._provider.resource,
                    attrs,
                    events,
                    kind=kind,
                    status=status,
                    start_time=now,
                    end_time=now,
                    instrumentation_scope=self._scope,
                )
            )
        return span_context

    def end(
        self,
        span: Begun,
        status: Status = UNSET,
        events: tuple[Event, ...] = (),
        links: Sequence[trace.Link] = (),
        end_time: int | None = None,
    ) -> None:
        """Hand the span, finished (now by default), to the provider's processors."""
        if not span.recording:
            return
        finished = ReadableSpan(
            span.name,
            span.context,
            span.parent,
            self._provider.resource,
            span.attributes,
            events,
            links,
            kind=span.kind,
            status=status,
            start_time=span.start,
            end_time=end_time or time.time_ns(),
            instrumentation_scope=self._scope,
        )
        self._emit(finished)

    def _emit(self, span: ReadableSpan) -> None:
        for processor in self._provider.span_processors:
            processor.on_end(span)


class LiveSpan(trace.Span):
    """A span current while code runs (RunActivity), finished by :class:`FinishedSpans`.

    The trace API's ``Span`` without the SDK's per-span machinery: saga's own attributes
    are stored as given (they are valid by construction); what the user's code sets is
    validated as the SDK does, through ``BoundedAttributes``.
    """

    def __init__(self, spans: FinishedSpans, begun: Begun) -> None:
        self._spans = spans
        self._begun = begun
        self._attributes: dict[str, Any] | BoundedAttributes = begun.attributes
        self._events: list[Event] = []
        self._links: list[trace.Link] = []
        self._status = UNSET
        self._ended = False

    def get_span_context(self) -> SpanContext:
        """The context the span was begun with."""
        return self._begun.context

    def is_recording(self) -> bool:
        """Until it ends."""
        return not self._ended

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set attributes, validated as the SDK's span does."""
        if self._ended:
            return
        if not isinstance(self._attributes, BoundedAttributes):
            self._attributes = BoundedAttributes(attributes=self._attributes, immutable=False)
        for key, value in attributes.items():
            self._attributes[key] = value

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute, validated as the SDK's span does."""
        self.set_attributes({key: value})

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Record an event, at ``timestamp`` or now."""
        if not self._ended:
            bounded = BoundedAttributes(attributes=attributes)
            self._events.append(Event(name, bounded, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Link another span."""
        if not self._ended and context.is_valid:
            self._links.append(trace.Link(context, BoundedAttributes(attributes=attributes)))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if not self._ended:
            self._begun.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status; as in the SDK, OK is final and UNSET changes nothing."""
        if not isinstance(status, Status):
            status = Status(status, description)
        if self._ended or self._status.status_code is StatusCode.OK:
            return
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an exception as the SDK does: an ``exception`` event."""
        event = exception_event(exception, escaped)
        self.add_event(event.name, {**(event.attributes or {}), **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """Hand the finished span to the provider's processors (once)."""
        if self._ended:
            return
        self._ended = True
        self._begun.attributes = self._attributes
        self._spans.end(self._begun, self._status, tuple(self._events), self._links, end_time)


def exception_event(exc: BaseException, escaped: bool = False) -> Event:
    """The ``exception`` event the SDK records for an exception."""
    kind = type(exc)
    module = kind.__module__
    return Event(
        "exception",
        {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
            "exception.escaped": str(escaped),
        },
    )

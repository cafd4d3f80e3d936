"""OpenTelemetry spans, metrics and context propagation: one trace per saga.

The only package that imports OpenTelemetry. Spans follow Temporal's names:

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
``add`` costs more than the span it counts. Saga's own short spans are built finished
(:mod:`saga.tracing.spans`) when the provider is a :class:`SagaTracerProvider`.

Modules: :mod:`~saga.tracing.telemetry` (the spans and metrics a process emits),
:mod:`~saga.tracing.spans` (the fast path), :mod:`~saga.tracing.carrier` (W3C carriers),
:mod:`~saga.tracing.otlp_encoder` and :mod:`~saga.tracing.otlp_http` (OTLP/HTTP export at
a fifth of the SDK's encoding cost), :mod:`~saga.tracing.setup` (``OTEL_*`` configuration).
"""

from __future__ import annotations

from saga.tracing.carrier import Carrier
from saga.tracing.setup import configure_from_env, shutdown
from saga.tracing.spans import SagaTracerProvider
from saga.tracing.telemetry import Telemetry

__all__ = ["Carrier", "SagaTracerProvider", "Telemetry", "configure_from_env", "shutdown"]

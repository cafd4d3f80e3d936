"""W3C trace context carriers: the stored context and the task headers.

Always ``traceparent``, ``tracestate`` and ``baggage``, written straight from a span
context rather than through the global propagator, and parsed once per distinct carrier.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Carrier = dict[str, str]

_TRACE_CONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()


def carrier_of(sc: SpanContext, parent: Mapping[str, str] | None) -> Carrier:
    """W3C headers naming ``sc``, carrying the parent's baggage on.

    What the generic propagator writes, at half its cost. Without a valid span context (the
    API is a no-op) the parent's context passes on as it is.
    """
    if not sc.is_valid:
        return dict(parent or {})
    carrier = {"traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"}
    if sc.trace_state:
        carrier["tracestate"] = sc.trace_state.to_header()
    if parent and "baggage" in parent:
        carrier["baggage"] = parent["baggage"]
    return carrier


def current_baggage() -> Carrier:
    """The caller's baggage, from the current context, as a carrier."""
    baggage: Carrier = {}
    _BAGGAGE.inject(baggage)
    return baggage


# What saga writes: version 00, lowercase hex. Anything else goes through the propagator.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@functools.lru_cache(maxsize=4096)
def _extract(traceparent: str, tracestate: str, baggage: str) -> Context:
    match = _TRACEPARENT.fullmatch(traceparent) if not tracestate else None
    if match is None:
        carrier = {"traceparent": traceparent, "tracestate": tracestate}
        context = _TRACE_CONTEXT.extract({k: v for k, v in carrier.items() if v})
    else:  # as the propagator reads it, for half the cost
        trace_id, span_id, flags = (int(group, 16) for group in match.groups())
        sc = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
        context = trace.set_span_in_context(NonRecordingSpan(sc)) if sc.is_valid else Context()
    return _BAGGAGE.extract({"baggage": baggage}, context) if baggage else context


def context_of(carrier: Mapping[str, str] | None) -> Context:
    """The context a stored carrier names; parsed once per distinct carrier."""
    if not carrier or "traceparent" not in carrier:
        return Context()
    return _extract(
        carrier["traceparent"], carrier.get("tracestate", ""), carrier.get("baggage", "")
    )


def parent_of(context: Context) -> SpanContext:
    """The span context current in ``context`` (invalid when there is none)."""
    return trace.get_current_span(context).get_span_context()

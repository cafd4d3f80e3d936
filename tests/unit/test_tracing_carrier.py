"""Stored and task carriers read back as the W3C propagators read them."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.tracing.carrier import context_of

TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
CARRIERS = [
    {},
    {"traceparent": f"00-{TRACE}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{SPAN}-00"},
    {"traceparent": f"00-{TRACE}-{SPAN}-03", "baggage": "tenant=acme,region=eu"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=1,b=2"},
    {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
    {"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"},
    {"traceparent": f"01-{TRACE}-{SPAN}-01-future"},
    {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
    {"traceparent": f" 00-{TRACE}-{SPAN}-01"},
    {"traceparent": "garbage", "baggage": "tenant=acme"},
]


@pytest.mark.parametrize("carrier", CARRIERS, ids=[str(c) for c in CARRIERS])
def test_a_carrier_reads_as_the_propagators_read_it(carrier):
    expected = W3CBaggagePropagator().extract(
        carrier, TraceContextTextMapPropagator().extract(carrier)
    )
    got = context_of(carrier)
    # A SpanContext is a tuple: ids, remoteness, flags and trace state all compared.
    assert tuple(trace.get_current_span(got).get_span_context()) == tuple(
        trace.get_current_span(expected).get_span_context()
    )
    assert baggage.get_all(got) == baggage.get_all(expected)

"""saga's spans built finished sample and propagate exactly as the SDK's tracer would."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBased,
    TraceIdRatioBased,
)

from saga.tracing import SagaTracerProvider, Telemetry

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENTS = {
    "root": {},
    "sampled": {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
    "not sampled": {"traceparent": f"00-{TRACE}-b7ad6b7169203331-00"},
    "random id": {"traceparent": f"00-{TRACE}-b7ad6b7169203331-03"},
    "tracestate": {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01", "tracestate": "a=1,b=2"},
    "baggage": {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01", "baggage": "tenant=acme"},
    "malformed": {"traceparent": f"00-{TRACE.upper()}-b7ad6b7169203331-01"},
}
SAMPLERS = {
    "default on": DEFAULT_ON,  # decided by saga itself
    "default off": DEFAULT_OFF,
    "always on": ALWAYS_ON,
    "always off": ALWAYS_OFF,
    "parent-based, ratio 1": ParentBased(TraceIdRatioBased(1.0)),
}


def _trip(provider_type: type[TracerProvider], sampler, parent: dict[str, str]):
    exporter = InMemorySpanExporter()
    provider = provider_type(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tel = Telemetry(provider)
    run = tel.run_workflow(parent, "Trip", "wf", "run")
    task = tel.start_activity(
        run,
        activity="a",
        workflow_id="wf",
        run_id="run",
        seq=1,
        attempt=1,
        queue="q",
        compensation=False,
    )
    carriers = [{k: v[-2:] if k == "traceparent" else v for k, v in c.items()} for c in (run, task)]
    spans = exporter.get_finished_spans()
    same_trace = [s.context.trace_id == int(TRACE, 16) for s in spans]
    return carriers, [s.name for s in spans], same_trace


@pytest.mark.parametrize("parent", sorted(PARENTS))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_finished_spans_sample_and_propagate_as_the_sdk_does(sampler, parent):
    sdk = _trip(TracerProvider, SAMPLERS[sampler], PARENTS[parent])
    assert _trip(SagaTracerProvider, SAMPLERS[sampler], PARENTS[parent]) == sdk

"""What tracing costs one saga, in a tight loop: steadier than throughput on a shared machine.

    .venv/bin/python -m benchmarks.tracing_cost [--sagas 3000] [--rounds 5]

Runs the ``Telemetry`` calls of one 3-step saga (StartWorkflow, RunWorkflow, then per step
StartActivity, RunActivity with its two histogram points, and CompleteWorkflow: 9 spans)
with the garbage collector off, interleaving: tracing off (the API's no-op); the SDK's
tracer (a plain ``TracerProvider``); saga's spans built finished (a ``SagaTracerProvider``,
what ``configure_from_env`` sets up); both with a batch processor exporting nowhere. Then
the CPU of encoding those spans as an OTLP request, per span: the SDK's ``encode_spans``
against :mod:`saga.tracing.otlp_encoder`. Minimum and median of the rounds, in µs.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from saga.tracing import SagaTracerProvider, Telemetry
from saga.tracing.otlp_encoder import Encoder

STEPS = ("reserve_car", "book_hotel", "book_flight")


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def saga(tel: Telemetry, i: int) -> None:
    """The calls a coordinator, a worker and a client make for one saga."""
    workflow_id = f"trip-{i}"
    with tel.start_workflow("TripBooking", workflow_id) as root:
        pass
    run = tel.run_workflow(root, "TripBooking", workflow_id, "run-1")
    for seq, step in enumerate(STEPS, 1):
        attempt = {
            "activity": step,
            "workflow_id": workflow_id,
            "run_id": "run-1",
            "seq": seq,
            "attempt": 1,
            "queue": "trips",
            "compensation": False,
        }
        headers = tel.start_activity(run, **attempt)
        with tel.run_activity(headers, **attempt, schedule_to_start_ms=1.0) as finish:
            finish(None)
        tel.step_latency.record(2.0, {"saga.activity": step, "saga.queue": "trips"})
    tel.complete_workflow(
        run,
        workflow_type="TripBooking",
        workflow_id=workflow_id,
        run_id="run-1",
        status="COMPLETED",
        error=None,
    )


def telemetry(mode: str) -> tuple[Telemetry, Callable[[], None]]:
    if mode == "off":
        return Telemetry(), lambda: None
    provider = SagaTracerProvider() if mode == "finished" else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def shutdown() -> None:
        provider.shutdown()
        meters.shutdown()

    return Telemetry(provider, meters), shutdown


def per_saga(mode: str, sagas: int) -> float:
    tel, shutdown = telemetry(mode)
    began = time.process_time()
    for i in range(sagas):
        saga(tel, i)
    elapsed = time.process_time() - began
    shutdown()
    return elapsed / sagas * 1e6


def per_span(encode: Callable[[list[ReadableSpan]], bytes], spans: list[ReadableSpan]) -> float:
    began = time.process_time()
    for _ in range(20):
        encode(spans)
    return (time.process_time() - began) / 20 / len(spans) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    exporter = InMemorySpanExporter()
    provider = SagaTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for i in range(57):  # a batch of 513 spans, as the batch processor exports them
        saga(Telemetry(provider), i)
    spans = list(exporter.get_finished_spans())
    encoder = Encoder()
    costs: dict[str, list[float]] = {}
    gc.disable()
    try:
        for _ in range(args.rounds):
            for mode in ("off", "sdk", "finished"):
                costs.setdefault(f"saga, {mode}", []).append(per_saga(mode, args.sagas))
            sdk = per_span(lambda s: encode_spans(s).SerializePartialToString(), spans)
            costs.setdefault("span encoding, SDK", []).append(sdk)
            costs.setdefault("span encoding, saga", []).append(per_span(encoder.encode, spans))
    finally:
        gc.enable()
    for name, values in costs.items():
        unit = "µs/span" if "encoding" in name else "µs/saga"
        print(f"{name:>20}: {min(values):7.1f} {unit}  median {statistics.median(values):7.1f}")


if __name__ == "__main__":
    main()

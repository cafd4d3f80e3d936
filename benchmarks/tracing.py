"""Tracing overhead: the 3-step saga with tracing off, on with a no-op exporter, and on
exporting over OTLP/HTTP to a local receiver (all embedded, SQLite file).

    .venv/bin/python -m benchmarks.tracing [--workflows 500] [--concurrency 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.embedded import run
from saga.tracing import Telemetry
from tests.support.otlp_receiver import OTLPReceiver


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with OTLPReceiver() as receiver:
        modes: dict[str, Callable[[], TracerProvider | None]] = {
            "off": lambda: None,
            "noop-exporter": lambda: _provider(NoopExporter()),
            "otlp-http": lambda: _provider(
                OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
            ),
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):  # interleaved rounds: drift hits every mode alike
            for name, make in modes.items():
                url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'b.db'}"
                provider = make()
                telemetry = Telemetry(provider) if provider is not None else None
                result = asyncio.run(run(args.workflows, args.concurrency, url, telemetry))
                if provider is not None:
                    provider.shutdown()  # flush what is batched before the next mode
                best[name] = max(best.get(name, 0.0), result["workflows_per_s"])
        spans = len(receiver.snapshot())
    base = best["off"]
    for name, rate in best.items():
        print(f"{name:>14}: {rate:7.1f} sagas/s ({(1 - rate / base) * 100:+.1f}% overhead)")
    print(f"spans received over OTLP: {spans}")


def _provider(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


if __name__ == "__main__":
    main()

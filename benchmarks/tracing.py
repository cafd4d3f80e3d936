"""Tracing overhead: the 3-step saga with tracing off, on with a no-op exporter, and on
exporting over OTLP/HTTP to a local receiver (with saga's exporter, and with the SDK's).

    .venv/bin/python -m benchmarks.tracing [--workflows 2000] [--concurrency 50] [--rounds 3]
    .venv/bin/python -m benchmarks.tracing --distributed [--workflows 400] [--rounds 3]

Embedded (the default): client, coordinator and worker in this process, on a SQLite file
and the in-process broker. ``--distributed``: on a scratch PostgreSQL database and RabbitMQ
vhost (made and dropped as :mod:`benchmarks.distributed` does), a coordinator and a worker
process per run, the trip-booking saga driven by ``saga bench``'s closed loop from here.

"On" means what a deployment gets from ``configure_from_env``: a ``SagaTracerProvider``
(saga's own spans built finished, see :mod:`saga.tracing.spans`) with a batch span
processor, and a meter provider, in every process (client, coordinator, worker). The OTLP
receiver runs in a process of its own, as a collector would: decoding spans is not saga's
cost. Modes are interleaved round by round, so drift on a shared machine hits all of them
alike.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import multiprocessing
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks import embedded
from benchmarks.distributed import (
    _admin,
    _rabbitmqctl,
    _with_database,
    _with_vhost,
    add_service_arguments,
)
from saga.bench import BenchConfig, run_bench
from saga.bench.driver import _await_ready, _launch, _stop
from saga.tracing import SagaTracerProvider, Telemetry
from saga.tracing.otlp_http import OTLPHTTPSpanExporter
from tests.support.otlp_receiver import OTLPReceiver

MODES = ("off", "noop-exporter", "otlp-http", "otlp-http-sdk-exporter")


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def providers(mode: str, endpoint: str) -> tuple[TracerProvider, MeterProvider] | None:
    """The SDK set up as ``saga.tracing.configure_from_env`` does, or None for "off".

    "otlp-http" exports with saga's OTLP/HTTP exporter (the default),
    "otlp-http-sdk-exporter" with the SDK's (``SAGA_OTEL_SDK_EXPORTER=true``).
    """
    if mode == "off":
        return None
    tracer_provider = SagaTracerProvider()
    if mode == "noop-exporter":
        exporter: SpanExporter = NoopExporter()
        reader: InMemoryMetricReader | PeriodicExportingMetricReader = InMemoryMetricReader()
    else:
        traces = f"{endpoint}/v1/traces"
        if mode == "otlp-http":
            exporter = OTLPHTTPSpanExporter(traces)
        else:
            exporter = OTLPSpanExporter(endpoint=traces)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")
        )
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    return tracer_provider, MeterProvider(metric_readers=[reader])


def _shutdown(pair: tuple[TracerProvider, MeterProvider] | None) -> None:
    if pair is not None:
        for provider in pair:
            provider.shutdown()  # flush what is batched before the next run


def _receive(conn: Connection) -> None:
    """The receiver's process: sends its endpoint, then the span count when asked."""
    with OTLPReceiver() as receiver:
        conn.send(receiver.endpoint)
        while conn.recv() == "count":
            conn.send(len(receiver.snapshot()))


@dataclass
class Run:
    """One run's throughput and CPU milliseconds per saga, by process."""

    rate: float
    cpu_ms: dict[str, float]


async def _embedded_run(mode: str, endpoint: str, args: argparse.Namespace) -> Run:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'b.db'}"
    pair = providers(mode, endpoint)
    telemetry = Telemetry(*pair) if pair is not None else None
    began = time.process_time()
    try:
        result = await embedded.run(args.workflows, args.concurrency, url, telemetry)
    finally:
        _shutdown(pair)
    cpu_ms = (time.process_time() - began) * 1000 / args.workflows
    return Run(result["workflows_per_s"], {"process": cpu_ms})


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _distributed_run(
    mode: str, endpoint: str, db: str, broker: str, args: argparse.Namespace
) -> Run:
    common = ["--app", "saga.bench.scenarios", "--db", db, "--broker", broker]
    logs = Path(tempfile.mkdtemp(prefix="saga-bench-tracing-"))
    daemons = []
    try:
        for role in ("coordinator", "worker"):
            command = [sys.executable, "-m", "benchmarks.tracing", "--daemon", mode, role]
            daemons.append(_launch([*command, *common], logs / f"{role}.log", dict(os.environ)))
            await _await_ready(daemons[-1], logs / f"{role}.log")
        # CPU per saga moves less than throughput when other work shares the machine.
        cpu_before = [_cpu_seconds(d.pid) for d in daemons] + [time.process_time()]
        pair = providers(mode, endpoint)
        cfg = BenchConfig(
            workflows=args.workflows,
            concurrency=args.concurrency,
            database_url=db,
            broker_url=broker,
            external=True,
            seed=secrets.randbelow(10**6),
        )

        def trace_client(client: object) -> None:
            if pair is not None:
                client.telemetry = Telemetry(*pair)  # type: ignore[attr-defined]

        try:
            report = await run_bench(cfg, show_progress=False, on_client=trace_client)
            cpu_after = [_cpu_seconds(d.pid) for d in daemons] + [time.process_time()]
        finally:
            _shutdown(pair)
    finally:
        await asyncio.to_thread(_stop, daemons)
    if not report.ok or report.started != args.workflows:
        raise SystemExit(f"{mode}: sagas lost, stuck or inconsistent: {report.by_status}")
    cpu_ms = [(a - b) * 1000 / args.workflows for a, b in zip(cpu_after, cpu_before, strict=True)]
    roles = ("coordinator", "worker", "client")
    return Run(report.workflows_per_s, dict(zip(roles, cpu_ms, strict=True)))


async def _measure(args: argparse.Namespace, endpoint: str, count: Connection) -> None:
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    spans = 0
    db = broker = ""
    if args.distributed:
        name, vhost = f"saga_bench_{secrets.token_hex(4)}", f"saga-bench-{secrets.token_hex(4)}"
        db, broker = _with_database(args.admin_db, name), _with_vhost(args.broker, vhost)
        await _admin(args.admin_db, f'CREATE DATABASE "{name}"')
        _rabbitmqctl("add_vhost", vhost)
    try:
        if args.distributed:
            user = urlsplit(args.broker).username or "guest"
            _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            upgrade = [sys.executable, "-m", "saga", "db", "upgrade", "--db", db]
            await asyncio.to_thread(subprocess.run, upgrade, check=True, capture_output=True)
        for _ in range(args.rounds):
            for mode in MODES:
                if args.distributed:
                    run = await _distributed_run(mode, endpoint, db, broker, args)
                else:
                    run = await _embedded_run(mode, endpoint, args)
                runs[mode].append(run)
                cpu = "  ".join(f"{k} {v:.2f}" for k, v in run.cpu_ms.items())
                print(f"  {mode:>22}: {run.rate:7.1f} sagas/s  CPU ms/saga: {cpu}", flush=True)
        count.send("count")
        spans = count.recv()
    finally:
        if args.distributed:
            await _admin(args.admin_db, f'DROP DATABASE IF EXISTS "{name}"')
            _rabbitmqctl("delete_vhost", vhost)
    _summary(runs)
    expected = 9 * args.workflows * args.rounds * sum(m.startswith("otlp") for m in MODES)
    print(f"spans received over OTLP: {spans} (9 per saga and OTLP mode: {expected})")


def _summary(runs: dict[str, list[Run]]) -> None:
    """Best and median throughput, and median CPU per saga, each against "off"."""
    rates = {mode: [r.rate for r in rs] for mode, rs in runs.items()}
    cpu = {mode: [sum(r.cpu_ms.values()) for r in rs] for mode, rs in runs.items()}
    best, median = max(rates["off"]), statistics.median(rates["off"])
    cpu_off = statistics.median(cpu["off"])
    for mode, values in rates.items():
        mid, cpu_mid = statistics.median(values), statistics.median(cpu[mode])
        print(
            f"{mode:>22}: best {max(values):7.1f} ({(1 - max(values) / best) * 100:+5.1f}%)"
            f"  median {mid:7.1f} ({(1 - mid / median) * 100:+5.1f}%)"
            f"  [{min(values):.1f} .. {max(values):.1f}]"
            f"  CPU ms/saga {cpu_mid:.2f} ({(cpu_mid / cpu_off - 1) * 100:+5.1f}%)"
        )


def _daemon(mode: str, argv: list[str]) -> None:
    """A coordinator or worker with tracing set up for ``mode``, then ``saga``'s CLI."""
    from saga.cli import main

    pair = providers(mode, os.environ["SAGA_BENCH_OTLP"])
    if pair is not None:
        trace.set_tracer_provider(pair[0])
        metrics.set_meter_provider(pair[1])
        atexit.register(_shutdown, pair)
    main(argv)


def main() -> None:
    if sys.argv[1:2] == ["--daemon"]:  # how _distributed_run starts its processes
        _daemon(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, help="per run (2000 embedded, 400 distributed)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--distributed", action="store_true")
    add_service_arguments(parser)
    args = parser.parse_args()
    args.workflows = args.workflows or (400 if args.distributed else 2000)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    receiver = context.Process(target=_receive, args=(theirs,), daemon=True)
    receiver.start()
    endpoint = ours.recv()
    os.environ["SAGA_BENCH_OTLP"] = endpoint  # for the daemons this spawns
    try:
        asyncio.run(_measure(args, endpoint, ours))
    finally:
        ours.send("stop")
        receiver.join(timeout=10)


if __name__ == "__main__":
    main()

"""Embedded throughput: a 3-activity workflow on a SQLite file and the in-process broker.

    .venv/bin/python -m benchmarks.embedded [--workflows 1000] [--concurrency 50]

Reports workflows/s, steps/s and start-to-result latency percentiles, and checks that
steady-state steps never read history (every step is a cache hit).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.workloads import ThreeSteps, step
from saga.testing import WorkflowEnvironment
from saga.tracing import Telemetry


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    workflows: int, concurrency: int, database_url: str, telemetry: Telemetry | None = None
) -> dict[str, float]:
    async with WorkflowEnvironment(
        workflows=[ThreeSteps],
        activities=[step],
        database_url=database_url,
        telemetry=telemetry,
    ) as env:
        history_loads = 0
        load_history = env.store.load_history

        async def counting_load(workflow_id: str, run_id: str):  # type: ignore[no-untyped-def]
            nonlocal history_loads
            history_loads += 1
            return await load_history(workflow_id, run_id)

        env.store.load_history = counting_load  # type: ignore[method-assign]
        latencies: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(workflows):
            queue.put_nowait(i)

        async def client_loop() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                began = time.perf_counter()
                handle = await env.client.start_workflow(ThreeSteps.run, i, id=f"bench-{i}")
                assert await handle.result(timeout=120) == i + 3
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "workflows": workflows,
        "concurrency": concurrency,
        "seconds": elapsed,
        "workflows_per_s": workflows / elapsed,
        "steps_per_s": 3 * workflows / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "history_loads": history_loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    args = parser.parse_args()
    url = args.db or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    result = asyncio.run(run(args.workflows, args.concurrency, url))
    for key, value in result.items():
        print(f"{key:>16}: {value:.1f}" if isinstance(value, float) else f"{key:>16}: {value}")


if __name__ == "__main__":
    main()

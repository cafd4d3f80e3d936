"""Replay of a 10,000-event history: what a cache miss costs.

    .venv/bin/python -m benchmarks.replay [--steps 5000] [--rounds 5]

Builds a real history by running ``ManySteps`` embedded on a SQLite file (each step is a
scheduled and a completed event), then times, best of several rounds: reading the history
from the store and rebuilding the events, replaying it through the workflow code and the
engine state, and both together (the full cost of a cache miss).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.workloads import ManySteps, step
from saga.replay import replay_history
from saga.testing import WorkflowEnvironment


async def measure(steps: int, rounds: int) -> None:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'replay.db'}"
    async with WorkflowEnvironment(
        workflows=[ManySteps], activities=[step], database_url=url
    ) as env:
        handle = await env.client.start_workflow(ManySteps.run, steps, id="replay-bench")
        await handle.result(timeout=900)
        record = await env.store.get_workflow(handle.id)
        assert record is not None
        load, replay = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            events = await env.store.load_history(record.workflow_id, record.run_id)
            load.append(time.perf_counter() - began)
            began = time.perf_counter()
            replay_history([ManySteps], handle.id, events)
            replay.append(time.perf_counter() - began)
    total = min(a + b for a, b in zip(load, replay, strict=True))
    print(f"events: {len(events)}")
    print(f"load from the store, best of {rounds}: {min(load) * 1000:.1f} ms")
    print(f"replay (code + engine state), best of {rounds}: {min(replay) * 1000:.1f} ms")
    print(f"cache miss in all (load + replay), best of {rounds}: {total * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000, help="activities (2 events each)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure(args.steps, args.rounds))


if __name__ == "__main__":
    main()

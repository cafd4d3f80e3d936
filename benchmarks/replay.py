"""Replay of a 10,000-event history: how long a cache miss costs.

    .venv/bin/python -m benchmarks.replay [--steps 5000]

Builds a real history by running ``ManySteps`` embedded (each step is a scheduled and a
completed event), then times ``replay_history`` on it, best of several rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.workloads import ManySteps, step
from saga.history import history_from_json, history_to_json
from saga.replay import replay_history
from saga.testing import WorkflowEnvironment


async def build_history(steps: int) -> dict[str, object]:
    async with WorkflowEnvironment(workflows=[ManySteps], activities=[step]) as env:
        handle = await env.client.start_workflow(ManySteps.run, steps, id="replay-bench")
        await handle.result(timeout=600)
        return history_to_json(handle.id, await handle.history())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000, help="activities (2 events each)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    exported = asyncio.run(build_history(args.steps))
    workflow_id, events = history_from_json(exported)
    timings = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        replay_history([ManySteps], workflow_id, events)
        timings.append(time.perf_counter() - began)
    began = time.perf_counter()
    history_from_json(exported)
    parse = time.perf_counter() - began
    print(f"events: {len(events)}")
    print(f"replay (code + engine state), best of {args.rounds}: {min(timings) * 1000:.1f} ms")
    print(f"parse JSON export into events: {parse * 1000:.1f} ms")


if __name__ == "__main__":
    main()

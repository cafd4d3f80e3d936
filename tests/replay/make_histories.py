"""Regenerate the pinned histories: ``python -m tests.replay.make_histories``.

Only run this on purpose. The replay tests read the files and never write them: their
point is that histories recorded by *earlier* code keep replaying on the current code.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from saga.history import history_to_json
from saga.testing import WorkflowEnvironment
from tests.replay import workflows as w

HISTORIES = Path(__file__).parent / "histories"


async def _record(
    workflow: Any, workflow_id: str, args: list[Any], *, signal: tuple[str, str] | None = None
) -> dict[str, Any]:
    async with WorkflowEnvironment(
        workflows=[workflow], activities=w.ACTIVITIES, time_skipping=True
    ) as env:
        handle = await env.client.start_workflow(workflow, *args, id=workflow_id)
        if signal is not None:
            await handle.signal(*signal)
        await handle.result(timeout=60)
        return history_to_json(workflow_id, await handle.history())


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    made = {
        "order_workflow.json": await _record(w.OrderWorkflow, "order-1", ["order-1"]),
        "patched_order_before.json": await _record(
            w.PatchedOrderBeforePatch, "patched-before", ["order-2"]
        ),
        "patched_order_after.json": await _record(w.PatchedOrder, "patched-after", ["order-3"]),
        "kitchen_sink.json": await _record(
            w.KitchenSink, "kitchen-sink", ["order-4"], signal=("approve", "grace")
        ),
    }
    for name, data in made.items():
        (HISTORIES / name).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {HISTORIES / name} ({len(data['events'])} events)")


if __name__ == "__main__":
    asyncio.run(main())

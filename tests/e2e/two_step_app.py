"""A coordinator and a worker in one process, for ``test_crash.py`` to SIGKILL.

Run as ``python -m tests.e2e.two_step_app MODE DATABASE_URL FOLDER``:

* ``start-and-hang-in-two``: start ``crash-1``; step two signals readiness, then hangs;
* ``start-and-hang-in-one``: start ``crash-1``; step one signals readiness, then hangs;
* ``finish``: start nothing, let every step return, print the outcome as JSON.

Every attempt of step one appends a line to ``FOLDER/step_one.log``, outside the
process, so the count survives the crash.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from saga import WorkflowFailureError, activity, workflow
from saga.testing import WorkflowEnvironment

MODE, DATABASE_URL, FOLDER = sys.argv[1], sys.argv[2], Path(sys.argv[3])
WORKFLOW_ID = "crash-1"


def _ready(step: str) -> None:
    marker = FOLDER / "ready"
    partial = FOLDER / "ready.partial"
    partial.write_text(step)
    partial.rename(marker)  # appears whole, never half-written


@activity.defn(queue="crash")
async def step_one(order: str) -> str:
    info = activity.info()
    with (FOLDER / "step_one.log").open("a") as log:
        log.write(f"{info.idempotency_key} attempt={info.attempt} mode={MODE}\n")
    if MODE == "start-and-hang-in-one":
        _ready("one")
        await asyncio.Event().wait()
    return f"one({order})"


@activity.defn(queue="crash")
async def step_two(previous: str) -> str:
    if MODE == "start-and-hang-in-two":
        _ready("two")
        await asyncio.Event().wait()
    return f"two({previous})"


@workflow.defn
class CrashTwoSteps:
    @workflow.run
    async def run(self, order: str) -> str:
        first = await workflow.execute_activity(step_one, order)
        return await workflow.execute_activity(step_two, first)


async def main() -> None:
    async with WorkflowEnvironment(
        workflows=[CrashTwoSteps], activities=[step_one, step_two], database_url=DATABASE_URL
    ) as env:
        if MODE.startswith("start"):
            await env.client.start_workflow(CrashTwoSteps.run, "order-7", id=WORKFLOW_ID)
            await asyncio.Event().wait()  # until SIGKILL
        handle = env.client.get_workflow_handle(WORKFLOW_ID)
        try:
            outcome = {"result": await handle.result(timeout=60)}
        except WorkflowFailureError as exc:
            outcome = {"error": str(exc)}
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""Workflows whose histories hold every event type, for the Replayer round-trip tests.

``replayer_workflows_changed`` holds an incompatible version of ``Everything``: the same
type name, another order of steps.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from saga import ActivityError, ApplicationError, RetryPolicy, Saga, activity, workflow

QUEUE = "replayer-tests"

calls: Counter[str] = Counter()
release: asyncio.Event | None = None


@activity.defn(queue=QUEUE)
async def flaky(order: str) -> str:
    calls[order] += 1
    if calls[order] == 1:
        raise RuntimeError("warehouse busy")  # ActivityAttemptFailed, then a retry
    return f"reserved {order}"


@activity.defn(queue=QUEUE)
async def refuse(order: str) -> str:
    raise ApplicationError(f"{order} refused", type="Refused", non_retryable=True)


@activity.defn(queue=QUEUE)
async def book(order: str) -> str:
    return f"booked {order}"


@activity.defn(queue=QUEUE)
async def hold(order: str) -> str:
    await asyncio.Event().wait()  # until the workflow is cancelled and the worker stops
    return order


@activity.defn(queue=QUEUE)
async def undo(order: str) -> None:
    return None


@activity.defn(queue=QUEUE)
async def gate(order: str) -> str:
    # Running, it keeps the clock from skipping past the condition's timer until the
    # test has sent its signal and opened the gate.
    if release is not None:
        await release.wait()
    return order


ACTIVITIES = [flaky, refuse, book, hold, undo, gate]
FAST_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


@workflow.defn(name="Everything")
class Everything:
    """A patch, a retried step, a timer, a signal awaited with a timeout, a failed step."""

    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.run
    async def run(self, order: str) -> dict[str, Any]:
        patched = workflow.patched("notify-v2")
        reserved = await workflow.execute_activity(flaky, order, retry_policy=FAST_RETRY)
        await workflow.sleep(timedelta(minutes=1))
        await asyncio.gather(
            workflow.wait_condition(lambda: self.approved_by is not None, timeout=3600),
            workflow.execute_activity(gate, order),
        )
        try:
            await workflow.execute_activity(refuse, order, retry_policy=FAST_RETRY)
            refused = False
        except ActivityError:
            refused = True
        return {
            "patched": patched,
            "reserved": reserved,
            "approved_by": self.approved_by,
            "refused": refused,
        }


@workflow.defn(name="Undoable")
class Undoable:
    """Books, then holds a step until cancelled: the step is abandoned, the booking undone."""

    @workflow.run
    async def run(self, order: str) -> str:
        async with Saga() as saga:
            booked = await workflow.execute_activity(book, order)
            saga.add_compensation(undo, order)
            await workflow.execute_activity(hold, order)
        return booked


@workflow.defn(name="Waits")
class Waits:
    """Waits for a signal that never comes: terminated, or timed out."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, order: str) -> str:
        await workflow.wait_condition(lambda: self.go)
        return order


@workflow.defn(name="Fails")
async def fails(order: str) -> str:
    """Fails at once: WorkflowFailed."""
    await workflow.execute_activity(book, order)
    raise ApplicationError(f"{order} cannot be processed", type="Broken")


WORKFLOWS = [Everything, Undoable, Waits, fails]

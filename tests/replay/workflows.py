"""Workflows whose histories are pinned under ``histories/``, and changed versions of them.

Changing the *current* classes here incompatibly is exactly what the replay tests must
catch: regenerate the histories only on purpose (``python -m tests.replay.make_histories``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from saga import RetryPolicy, activity, workflow

QUEUE = "replay-tests"


@activity.defn(queue=QUEUE)
async def charge(order: str) -> str:
    return f"charged {order}"


@activity.defn(queue=QUEUE)
async def ship(order: str) -> str:
    return f"shipped {order}"


@activity.defn(queue=QUEUE)
async def notify(order: str) -> str:
    return f"notified {order}"


@activity.defn(queue=QUEUE)
async def reserve(order: str) -> str:
    if activity.info().attempt == 1:
        raise RuntimeError("warehouse busy")  # recorded as ActivityAttemptFailed
    return f"reserved {order}"


ACTIVITIES = [charge, ship, notify, reserve]


# --- the order workflow and a changed copy ----------------------------------------------------
@workflow.defn(name="OrderWorkflow")
class OrderWorkflow:
    """Current code: charge, then ship."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        charged = await workflow.execute_activity(charge, order)
        shipped = await workflow.execute_activity(ship, order)
        return [charged, shipped]


@workflow.defn(name="OrderWorkflow")
class OrderWorkflowReordered:
    """An incompatible change: the same type, the steps in another order."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        shipped = await workflow.execute_activity(ship, order)
        charged = await workflow.execute_activity(charge, order)
        return [charged, shipped]


@workflow.defn(name="OrderWorkflow")
class OrderWorkflowExtraStep:
    """An incompatible change: a step added at the end, unguarded."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        charged = await workflow.execute_activity(charge, order)
        shipped = await workflow.execute_activity(ship, order)
        await workflow.execute_activity(notify, order)
        return [charged, shipped]


# --- a compatible change, guarded by workflow.patched -----------------------------------------
@workflow.defn(name="PatchedOrder")
class PatchedOrderBeforePatch:
    """The code before the patch (made ``histories/patched_order_before.json``)."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        done = [await workflow.execute_activity(charge, order)]
        done.append(await workflow.execute_activity(ship, order))
        return done


@workflow.defn(name="PatchedOrder")
class PatchedOrder:
    """Current code: customers are notified, but only by runs that start after the patch."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        done = [await workflow.execute_activity(charge, order)]
        if workflow.patched("notify-customer"):
            done.append(await workflow.execute_activity(notify, order))
        done.append(await workflow.execute_activity(ship, order))
        return done


# --- most of the authoring API in one history -------------------------------------------------
@workflow.defn(name="KitchenSink")
class KitchenSink:
    """Retries, timers, gather, signals, conditions with timeouts, random and uuid."""

    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.run
    async def run(self, order: str) -> dict[str, Any]:
        ticket = str(workflow.uuid4())
        lucky = workflow.random() < 2  # always true; the draw itself is what is checked
        reserved = await workflow.execute_activity(
            reserve, order, retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2))
        )
        await workflow.sleep(timedelta(minutes=1))
        parts = await asyncio.gather(
            workflow.execute_activity(charge, order),
            workflow.execute_activity(ship, order),
            workflow.execute_activity(notify, order),
        )
        await workflow.wait_condition(lambda: self.approved_by is not None, timeout=3600)
        try:
            await workflow.wait_condition(lambda: False, timeout=timedelta(seconds=10))
            gave_up = False
        except TimeoutError:
            gave_up = True
        return {
            "ticket": ticket,
            "lucky": lucky,
            "reserved": reserved,
            "parts": list(parts),
            "approved_by": self.approved_by,
            "gave_up": gave_up,
            "finished": workflow.now().isoformat(),
        }


CURRENT = [OrderWorkflow, PatchedOrder, KitchenSink]
"""What is deployed today: every pinned history must replay against these."""

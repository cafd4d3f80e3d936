"""A deploy that breaks determinism, live: the workflow is parked, never corrupted.

Each test runs WorkflowEnvironment sessions in a row on one database (SQLite file or
PostgreSQL) and swaps the workflow class between them, as a deploy would.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from saga import WorkflowStatus, activity, workflow
from saga.client import WorkflowHandle
from saga.testing import WorkflowEnvironment
from tests.integration.engine_helpers import WAIT, eventually, of_type, types_of, wait_for_event

QUEUE = "replay-live-tests"

calls: Counter[str] = Counter()
ship_gate: asyncio.Event | None = None


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    calls.clear()
    yield


@activity.defn(queue=QUEUE)
async def charge(order: str) -> str:
    calls["charge"] += 1
    return f"charged {order}"


@activity.defn(queue=QUEUE)
async def ship(order: str) -> str:
    calls["ship"] += 1
    if ship_gate is not None:
        await ship_gate.wait()
    return f"shipped {order}"


@activity.defn(queue=QUEUE)
async def notify(order: str) -> str:
    calls["notify"] += 1
    return f"notified {order}"


ACTIVITIES = [charge, ship, notify]


class _Approval:
    def __init__(self) -> None:
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True


@workflow.defn(name="Fulfil")
class Fulfil(_Approval):
    """Version 1: charge, wait for approval, ship."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        charged = await workflow.execute_activity(charge, order)
        await workflow.wait_condition(lambda: self.approved)
        return [charged, await workflow.execute_activity(ship, order)]


@workflow.defn(name="Fulfil")
class FulfilShipFirst(_Approval):
    """An incompatible deploy: the steps swapped."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        shipped = await workflow.execute_activity(ship, order)
        await workflow.wait_condition(lambda: self.approved)
        return [await workflow.execute_activity(charge, order), shipped]


@workflow.defn(name="Fulfil")
class FulfilNotifying(_Approval):
    """A compatible deploy: a new step, guarded by workflow.patched."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        done = [await workflow.execute_activity(charge, order)]
        if workflow.patched("notify"):
            done.append(await workflow.execute_activity(notify, order))
        await workflow.wait_condition(lambda: self.approved)
        done.append(await workflow.execute_activity(ship, order))
        return done


@workflow.defn(name="Deliver")
class Deliver:
    """Version 1: two steps in a row."""

    @workflow.run
    async def run(self, order: str) -> list[str]:
        return [
            await workflow.execute_activity(charge, order),
            await workflow.execute_activity(ship, order),
        ]


@workflow.defn(name="Deliver")
class DeliverReordered:
    @workflow.run
    async def run(self, order: str) -> list[str]:
        return [
            await workflow.execute_activity(ship, order),
            await workflow.execute_activity(charge, order),
        ]


def session(database_url: str, *workflows: Any) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=list(workflows), activities=ACTIVITIES, database_url=database_url
    )


async def stuck_reason(handle: WorkflowHandle) -> str | None:
    return (await handle.describe()).stuck_reason


async def test_a_nondeterministic_deploy_parks_the_workflow_until_fixed(
    database_url: str,
) -> None:
    async with session(database_url, Fulfil) as env:
        handle = await env.client.start_workflow(Fulfil.run, "o-1", id="fulfil")
        await wait_for_event(handle, "ActivityCompleted")
        before = await handle.history()
    assert [e.type for e in before] == ["WorkflowStarted", "ActivityScheduled", "ActivityCompleted"]

    # Deploy incompatible code; a signal makes the coordinator replay the workflow.
    async with session(database_url, FulfilShipFirst) as env:
        handle = env.client.get_workflow_handle("fulfil")
        await handle.signal("approve")
        reason = await eventually(lambda: stuck_reason(handle), what="the workflow to be stuck")
        info = await handle.describe()
        assert info.status is WorkflowStatus.RUNNING  # stuck, not failed
        assert "nondeterminism" in reason and "at event 2" in reason
        assert "activity='charge'" in reason and "activity='ship'" in reason
        assert any("stuck" in warning for warning in info.warnings)
        assert await handle.history() == before  # history untouched
        running = [d.id async for d in env.client.list_workflows(status="RUNNING")]
        assert running == ["fulfil"]
    assert calls == {"charge": 1}  # the new code's first step never ran

    # Deploy compatible code again: the workflow carries on, with the signal it was sent.
    async with session(database_url, Fulfil) as env:
        handle = env.client.get_workflow_handle("fulfil")
        assert await handle.result(timeout=WAIT) == ["charged o-1", "shipped o-1"]
        info = await handle.describe()
        assert info.status is WorkflowStatus.COMPLETED and info.stuck_reason is None
        events = await handle.history()
    assert events[:3] == before
    assert [e.type for e in events[3:]] == [
        "WorkflowSignaled",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    assert calls == {"charge": 1, "ship": 1}


async def test_a_result_that_arrives_while_stuck_is_kept_for_the_fix(database_url: str) -> None:
    global ship_gate
    ship_gate = asyncio.Event()  # ship hangs in the first session
    try:
        async with session(database_url, Deliver) as env:
            handle = await env.client.start_workflow(Deliver.run, "o-2", id="deliver")
            await wait_for_event(handle, "ActivityScheduled", count=2)
            await eventually(_ship_started, what="ship to start")
            before = await handle.history()
        ship_gate.set()

        # The outbox is replayed into the new broker: ship runs and reports while the
        # deployed code cannot replay; the result must wait, not vanish.
        async with session(database_url, DeliverReordered) as env:
            handle = env.client.get_workflow_handle("deliver")
            await eventually(lambda: stuck_reason(handle), what="the workflow to be stuck")
            await eventually(_ship_finished_twice, what="ship to run again")
            assert await handle.history() == before
    finally:
        ship_gate = None

    async with session(database_url, Deliver) as env:
        handle = env.client.get_workflow_handle("deliver")
        assert await handle.result(timeout=WAIT) == ["charged o-2", "shipped o-2"]
        events = await handle.history()
    assert events[: len(before)] == before
    assert len(of_type(events, "ActivityCompleted")) == 2
    assert calls["charge"] == 1


async def _ship_started() -> bool:
    return calls["ship"] >= 1


async def _ship_finished_twice() -> bool:
    return calls["ship"] >= 2


async def test_a_patched_deploy_keeps_old_runs_on_the_old_path(database_url: str) -> None:
    async with session(database_url, Fulfil) as env:
        old = await env.client.start_workflow(Fulfil.run, "old", id="patch-old")
        await wait_for_event(old, "ActivityCompleted")

    async with session(database_url, FulfilNotifying) as env:
        old = env.client.get_workflow_handle("patch-old")
        new = await env.client.start_workflow(FulfilNotifying.run, "new", id="patch-new")
        await wait_for_event(new, "ActivityCompleted", count=2)
        for handle in (old, new):
            await handle.signal("approve")
        assert await old.result(timeout=WAIT) == ["charged old", "shipped old"]
        assert await new.result(timeout=WAIT) == ["charged new", "notified new", "shipped new"]
        assert "MarkerRecorded" not in await types_of(old)
        assert (await types_of(new)).count("MarkerRecorded") == 1
        assert (await old.describe()).stuck_reason is None
    assert calls == {"charge": 2, "notify": 1, "ship": 2}

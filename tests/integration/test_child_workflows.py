"""Child workflows: results, failures and cancellation across the parent/child link.

The rule for sagas checked here: a failed or cancelled child compensates its own steps
before its parent hears of it; a child that completed is undone by its parent only
through a compensation the parent registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from saga import (
    ApplicationError,
    RetryPolicy,
    Saga,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowStatus,
    activity,
    workflow,
)
from saga.errors import ChildWorkflowError
from saga.history import ParentInfo, WorkflowStarted
from saga.testing import WorkflowEnvironment
from tests.integration.engine_helpers import WAIT, eventually, types_of

QUEUE = "child-tests"
ONCE = RetryPolicy(maximum_attempts=1)
log: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_log() -> Iterator[None]:
    log.clear()
    yield
    log.clear()


@activity.defn(queue=QUEUE)
async def do(step: str) -> str:
    log.append(step)
    if step.startswith("fail"):
        raise ApplicationError(f"{step} refused", type="Refused", non_retryable=True)
    return f"did {step}"


# --- children ---------------------------------------------------------------------------------
@workflow.defn
class Book:
    """Books ``what``; fails after booking when ``fail``; undoes its booking itself."""

    @workflow.run
    async def run(self, what: str, fail: bool) -> str:
        async with Saga() as saga:
            booked = await workflow.execute_activity(do, f"book {what}", retry_policy=ONCE)
            saga.add_compensation(do, f"unbook {what}")
            if fail:
                await workflow.execute_activity(do, f"fail after {what}", retry_policy=ONCE)
        return booked


@workflow.defn
class Waits:
    """Books something, then waits for a signal (or a day); undoes it on cancellation."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def release(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, what: str) -> str:
        async with Saga() as saga:
            await workflow.execute_activity(do, f"book {what}", retry_policy=ONCE)
            saga.add_compensation(do, f"unbook {what}")
            with contextlib.suppress(TimeoutError):  # a day is as good as a release
                await workflow.wait_condition(lambda: self.go, timeout=timedelta(days=1))
        return f"released {what}"


@workflow.defn
class Countdown:
    @workflow.run
    async def run(self, n: int) -> str:
        if n > 0:
            workflow.continue_as_new(n - 1)
        return "lift-off"


# --- parents ----------------------------------------------------------------------------------
@workflow.defn
class Trip:
    """Books a flight itself, then a hotel through a child; undoes the flight on failure."""

    @workflow.run
    async def run(self, fail_hotel: bool) -> dict[str, Any]:
        async with Saga() as saga:
            flight = await workflow.execute_activity(do, "book flight", retry_policy=ONCE)
            saga.add_compensation(do, "unbook flight")
            hotel = await workflow.execute_child_workflow(
                Book.run, "hotel", fail_hotel, id=f"{workflow.info().workflow_id}-hotel"
            )
        return {"flight": flight, "hotel": hotel, "parent": workflow.info().workflow_id}


@workflow.defn
class TripWaiting:
    """Books a flight, then waits for a child that waits for a signal."""

    @workflow.run
    async def run(self, child_id: str) -> str:
        async with Saga() as saga:
            await workflow.execute_activity(do, "book flight", retry_policy=ONCE)
            saga.add_compensation(do, "unbook flight")
            result: str = await workflow.execute_child_workflow(Waits.run, "car", id=child_id)
        return result


@workflow.defn
class TakesAnId:
    @workflow.run
    async def run(self, child_id: str) -> str:
        try:
            await workflow.start_child_workflow(Waits.run, "x", id=child_id)
        except WorkflowAlreadyStartedError:
            return "taken"
        return "started"


@workflow.defn
class ChargeThenShip:
    """A completed child (the charge) is undone by a compensation the parent registered."""

    @workflow.run
    async def run(self) -> str:
        async with Saga() as saga:
            await workflow.execute_child_workflow(Book.run, "charge", False, id="charge")
            saga.add_compensation(
                functools.partial(workflow.execute_child_workflow, id="refund"),
                Book.run,
                "refund",
                False,
            )
            await workflow.execute_activity(do, "fail shipping", retry_policy=ONCE)
        return "shipped"


@workflow.defn
class LeavesAChild:
    @workflow.run
    async def run(self, child_id: str) -> str:
        handle = await workflow.start_child_workflow(Waits.run, "orphan", id=child_id)
        return handle.id


@workflow.defn
class AwaitsCountdown:
    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_child_workflow(Countdown.run, 3, id="countdown")
        return result


WORKFLOWS = [
    Book,
    Waits,
    Countdown,
    Trip,
    TripWaiting,
    TakesAnId,
    ChargeThenShip,
    LeavesAChild,
    AwaitsCountdown,
]


def environment(database_url: str, **options: Any) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=WORKFLOWS, activities=[do], database_url=database_url, **options
    )


async def child_waiting(env: WorkflowEnvironment, workflow_id: str) -> None:
    """Until the child exists and waits on its timer (it booked its step)."""

    async def waiting() -> bool:
        if await env.store.get_workflow(workflow_id) is None:
            return False
        return "TimerStarted" in await types_of(env.client.get_workflow_handle(workflow_id))

    await eventually(waiting, what=f"{workflow_id} waiting")


async def _status(env: WorkflowEnvironment, workflow_id: str) -> WorkflowStatus | None:
    rec = await env.store.get_workflow(workflow_id)
    return None if rec is None else rec.status


# --- tests ------------------------------------------------------------------------------------
async def test_a_child_returns_its_result_and_keeps_a_history_of_its_own(
    database_url: str,
) -> None:
    async with environment(database_url, time_skipping=True) as env:
        parent = await env.client.start_workflow(Trip.run, False, id="trip")
        assert await parent.result(timeout=WAIT) == {
            "flight": "did book flight",
            "hotel": "did book hotel",
            "parent": "trip",
        }
        assert await types_of(parent) == [
            "WorkflowStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ChildWorkflowInitiated",
            "ChildWorkflowStarted",
            "ChildWorkflowCompleted",
            "WorkflowCompleted",
        ]
        child = env.client.get_workflow_handle("trip-hotel")
        assert (await child.describe()).status is WorkflowStatus.COMPLETED
        started = (await child.history())[0].attributes
        assert isinstance(started, WorkflowStarted)
        assert started.parent == ParentInfo(workflow_id="trip", run_id=parent.run_id or "", seq=2)


async def test_a_child_failure_reaches_the_parent_after_the_child_compensated(
    database_url: str,
) -> None:
    async with environment(database_url, time_skipping=True) as env:
        parent = await env.client.start_workflow(Trip.run, True, id="trip-fails")
        with pytest.raises(WorkflowFailureError) as failure:
            await parent.result(timeout=WAIT)
        assert failure.value.status == "COMPENSATED"
        cause = failure.value.cause
        assert isinstance(cause, ChildWorkflowError)
        assert (cause.workflow_id, cause.workflow_type, cause.status) == (
            "trip-fails-hotel",
            "Book",
            "COMPENSATED",
        )
        assert "Refused" in str(cause.cause)
        # The child undid its own step before the parent heard, then the parent undid its.
        assert log == [
            "book flight",
            "book hotel",
            "fail after hotel",
            "unbook hotel",
            "unbook flight",
        ]
        assert await _status(env, "trip-fails-hotel") is WorkflowStatus.COMPENSATED


async def test_cancelling_the_parent_cancels_the_child_which_compensates_first(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        parent = await env.client.start_workflow(TripWaiting.run, "car-1", id="trip-cancel")
        child = env.client.get_workflow_handle("car-1")
        await child_waiting(env, "car-1")
        await parent.cancel("changed my mind")
        with pytest.raises(WorkflowFailureError) as failure:
            await parent.result(timeout=WAIT)
        assert failure.value.status == "CANCELLED"
        assert await _status(env, "car-1") is WorkflowStatus.CANCELLED
        assert log == ["book flight", "book car", "unbook car", "unbook flight"]
        types = await types_of(parent)
        assert types.index("ChildWorkflowCancelRequested") < types.index("ChildWorkflowFailed")
        assert "WorkflowCancelRequested" in await types_of(child)


async def test_a_child_id_already_running_fails_the_start_in_the_parent(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        squatter = await env.client.start_workflow(Waits.run, "squat", id="taken-id")
        parent = await env.client.start_workflow(TakesAnId.run, "taken-id", id="taker")
        assert await parent.result(timeout=WAIT) == "taken"
        assert "ChildWorkflowStartFailed" in await types_of(parent)
        await squatter.signal("release")
        assert await squatter.result(timeout=WAIT) == "released squat"


async def test_a_completed_child_is_undone_by_the_compensation_its_parent_registered(
    database_url: str,
) -> None:
    async with environment(database_url, time_skipping=True) as env:
        parent = await env.client.start_workflow(ChargeThenShip.run, id="order")
        with pytest.raises(WorkflowFailureError) as failure:
            await parent.result(timeout=WAIT)
        assert failure.value.status == "COMPENSATED"
        assert log == ["book charge", "fail shipping", "book refund"]
        assert await _status(env, "charge") is WorkflowStatus.COMPLETED
        assert await _status(env, "refund") is WorkflowStatus.COMPLETED


async def test_a_parent_that_closes_leaves_no_child_running(database_url: str) -> None:
    async with environment(database_url) as env:
        parent = await env.client.start_workflow(LeavesAChild.run, "orphan-1", id="leaver")
        assert await parent.result(timeout=WAIT) == "orphan-1"

        async def child_cancelled() -> bool:
            return await _status(env, "orphan-1") is WorkflowStatus.CANCELLED

        await eventually(child_cancelled, what="the orphan to be cancelled")
        types = await types_of(env.client.get_workflow_handle("orphan-1"))
        assert "WorkflowCancelRequested" in types


async def test_a_child_that_continues_as_new_reports_its_last_run(database_url: str) -> None:
    async with environment(database_url) as env:
        parent = await env.client.start_workflow(AwaitsCountdown.run, id="launch")
        assert await parent.result(timeout=WAIT) == "lift-off"
        child = await env.client.get_workflow_handle("countdown").describe()
        assert child.status is WorkflowStatus.COMPLETED
        assert child.input == [0]
        done = [e for e in await parent.history() if e.type == "ChildWorkflowCompleted"]
        assert done[0].attributes.run_id == child.run_id  # type: ignore[attr-defined]


async def test_the_link_survives_a_coordinator_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"
    async with environment(url) as env:
        await env.client.start_workflow(TripWaiting.run, "car-r", id="trip-restart")
        await child_waiting(env, "car-r")
    async with environment(url) as env:
        await env.client.get_workflow_handle("car-r").signal("release")
        parent = env.client.get_workflow_handle("trip-restart")
        assert await parent.result(timeout=WAIT) == "released car"
    assert log == ["book flight", "book car"]


async def test_a_day_long_child_costs_no_time_with_time_skipping(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        loop = asyncio.get_running_loop()
        began = loop.time()
        parent = await env.client.start_workflow(TripWaiting.run, "car-d", id="trip-day")
        # Nobody releases the car: its day runs out, and it completes all the same.
        assert await parent.result(timeout=WAIT) == "released car"
        assert loop.time() - began < 10

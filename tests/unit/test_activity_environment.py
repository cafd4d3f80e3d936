"""ActivityEnvironment: one activity, a fake activity.info(), heartbeats and cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from examples.trip_booking import activities as trip
from saga import activity
from saga.errors import SagaError
from saga.testing import ActivityEnvironment


@activity.defn(queue="tests")
async def describe_attempt(prefix: str) -> dict[str, Any]:
    info = activity.info()
    return {
        "prefix": prefix,
        "activity": info.activity,
        "queue": info.queue,
        "attempt": info.attempt,
        "key": info.idempotency_key,
        "resumed_from": info.heartbeat_details,
        "workflow": info.workflow_id,
        "compensation": info.compensation,
    }


@activity.defn(queue="tests")
async def copy_files(count: int) -> int:
    done = 0
    for i in range(count):
        activity.heartbeat(f"{i + 1}/{count}", {"done": i + 1})
        done += 1
        await asyncio.sleep(0)
    return done


seen_cancel: list[str] = []


@activity.defn(queue="tests")
async def wait_forever(started: asyncio.Event) -> None:
    activity.heartbeat("waiting")
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        seen_cancel.append(activity.info().idempotency_key)
        raise


@activity.defn(queue="tests")
def sync_step(x: int) -> str:
    activity.heartbeat(x)
    return f"{activity.info().activity}:{x}:attempt {activity.info().attempt}"


async def test_info_is_the_fake_with_the_settings_given() -> None:
    env = ActivityEnvironment(
        attempt=3,
        idempotency_key="trip-1/run-9/4",
        heartbeat_details=["50%"],
        workflow_id="trip-1",
        compensation=True,
    )

    got = await env.run(describe_attempt, "x")

    assert got == {
        "prefix": "x",
        "activity": "describe_attempt",
        "queue": "tests",
        "attempt": 3,
        "key": "trip-1/run-9/4",
        "resumed_from": ["50%"],
        "workflow": "trip-1",
        "compensation": True,
    }


async def test_the_default_idempotency_key_is_built_as_the_worker_builds_it() -> None:
    env = ActivityEnvironment(workflow_id="wf", run_id="run", seq=7)

    got = await env.run(describe_attempt, "y")

    assert (got["attempt"], got["key"]) == (1, "wf/run/7")


async def test_heartbeats_are_captured_in_order_and_reach_the_callback() -> None:
    seen: list[list[Any]] = []
    env = ActivityEnvironment(on_heartbeat=seen.append)

    assert await env.run(copy_files, 3) == 3

    assert env.heartbeats == [
        ["1/3", {"done": 1}],
        ["2/3", {"done": 2}],
        ["3/3", {"done": 3}],
    ]
    assert seen == env.heartbeats


async def test_cancellation_is_seen_by_the_activity_as_cancelled_error() -> None:
    env = ActivityEnvironment(idempotency_key="k-cancel")
    started = asyncio.Event()
    seen_cancel.clear()

    running = asyncio.create_task(env.run(wait_forever, started))
    await asyncio.wait_for(started.wait(), 5)
    env.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)
    assert seen_cancel == ["k-cancel"]
    assert env.heartbeats == [["waiting"]]


async def test_cancel_before_run_cancels_the_next_call() -> None:
    env = ActivityEnvironment()
    env.cancel()

    with pytest.raises(asyncio.CancelledError):
        await env.run(wait_forever, asyncio.Event())

    started = asyncio.Event()
    task = asyncio.create_task(env.run(wait_forever, started))
    await asyncio.wait_for(started.wait(), 5)  # the request was used up: this one runs
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_sync_activity_runs_in_a_thread_with_the_context() -> None:
    env = ActivityEnvironment(attempt=2)

    assert await env.run(sync_step, 5) == "sync_step:5:attempt 2"
    assert env.heartbeats == [[5]]


async def test_an_activity_error_propagates_unchanged() -> None:
    env = ActivityEnvironment()

    with pytest.raises(Exception, match="no car available for bob") as caught:
        await env.run(trip.reserve_car, trip.TripRequest(name="bob", fail_at="car"))

    assert type(caught.value).__name__ == "ApplicationError"


async def test_the_example_dedupes_retries_by_the_idempotency_key() -> None:
    trip.services.reset()
    request = trip.TripRequest(name="carol")
    try:
        first = await ActivityEnvironment(idempotency_key="k1").run(trip.reserve_car, request)
        retry = await ActivityEnvironment(idempotency_key="k1", attempt=2).run(
            trip.reserve_car, request
        )
        other = await ActivityEnvironment(idempotency_key="k2").run(trip.reserve_car, request)
    finally:
        booked = dict(trip.services.car.by_key)
        trip.services.reset()
    assert first == retry == "car-1-carol"
    assert other == "car-2-carol"
    assert booked == {"k1": "car-1-carol", "k2": "car-2-carol"}


async def test_outside_an_environment_info_still_refuses() -> None:
    env = ActivityEnvironment()
    await env.run(copy_files, 1)

    with pytest.raises(SagaError, match="only work inside an activity"):
        activity.info()


async def test_one_environment_runs_one_activity_at_a_time() -> None:
    env = ActivityEnvironment()
    started = asyncio.Event()
    first = asyncio.create_task(env.run(wait_forever, started))
    await asyncio.wait_for(started.wait(), 5)

    with pytest.raises(RuntimeError, match="already running"):
        await env.run(copy_files, 1)

    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

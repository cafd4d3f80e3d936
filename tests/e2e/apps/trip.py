"""The app the distributed e2e tests run: workflows for the coordinator, activities for workers.

Like ``examples/trip_booking``, but every call is recorded *outside* the processes, as a
JSON line in the file named by ``SAGA_E2E_CALLS``, so a test can count calls across
workers, SIGKILLs and restarts. Each line has ``event`` (``started``, ``effect``,
``duplicate``, ``refused``), ``activity``, ``key`` (the idempotency key), ``attempt``,
``workflow_id`` and ``pid``.

The services deduplicate by idempotency key in that same file (under a lock): a call
whose key already had its ``effect`` records a ``duplicate`` and changes nothing, as a
real service would. Queues are ``<SAGA_E2E_QUEUE_PREFIX>-cars`` / ``-hotels`` /
``-flights`` so each test has its own.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from saga import ApplicationError, RetryPolicy, Saga, activity, workflow

PREFIX = os.environ.get("SAGA_E2E_QUEUE_PREFIX", "e2e")
CARS, HOTELS, FLIGHTS = f"{PREFIX}-cars", f"{PREFIX}-hotels", f"{PREFIX}-flights"

Step = Literal["car", "hotel", "flight"]


class TripRequest(BaseModel):
    """Who travels; and, for the tests, what goes wrong where."""

    name: str
    fail_at: Step | None = None
    block_at: Step | None = None
    """This step records ``started``, then waits until ``release_file`` exists."""
    release_file: str | None = None
    delay: float = 0.0
    """Seconds of simulated work in every booking."""


def _calls_file() -> Path | None:
    path = os.environ.get("SAGA_E2E_CALLS")
    return Path(path) if path else None


def record(event: str, **fields: Any) -> bool:
    """Append one line; for ``effect``, only if the key has none yet (returns False then)."""
    path = _calls_file()
    info = activity.info()
    line = {
        "event": event,
        "activity": info.activity,
        "key": info.idempotency_key,
        "attempt": info.attempt,
        "workflow_id": info.workflow_id,
        "pid": os.getpid(),
        **fields,
    }
    if path is None:
        return True
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        if event == "effect":
            f.seek(0)
            for old in f.read().splitlines():
                done = json.loads(old)
                if done["event"] == "effect" and done["key"] == line["key"]:
                    line["event"] = "duplicate"
                    break
        f.write(json.dumps(line) + "\n")
        f.flush()
    return line["event"] == "effect"


async def _book(kind: Step, trip: TripRequest) -> str:
    record("started")
    if trip.block_at == kind and trip.release_file:
        release = Path(trip.release_file)
        deadline = time.monotonic() + 300
        while not release.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if trip.delay:
        await asyncio.sleep(trip.delay)
    if trip.fail_at == kind:
        record("refused")
        raise ApplicationError(
            f"no {kind} available for {trip.name}", type="BookingRefused", non_retryable=True
        )
    reservation = f"{kind}:{activity.info().idempotency_key}"
    record("effect", reservation=reservation)
    return reservation


async def _cancel(reservation: str) -> None:
    record("started", reservation=reservation)
    record("effect", reservation=reservation)


@activity.defn(queue=CARS)
async def reserve_car(trip: TripRequest) -> str:
    return await _book("car", trip)


@activity.defn(queue=CARS)
async def cancel_car(reservation: str) -> None:
    await _cancel(reservation)


@activity.defn(queue=HOTELS)
async def book_hotel(trip: TripRequest) -> str:
    return await _book("hotel", trip)


@activity.defn(queue=HOTELS)
async def cancel_hotel(reservation: str) -> None:
    await _cancel(reservation)


@activity.defn(queue=FLIGHTS)
async def book_flight(trip: TripRequest) -> str:
    return await _book("flight", trip)


@activity.defn(queue=FLIGHTS)
async def cancel_flight(reservation: str) -> None:
    await _cancel(reservation)


@activity.defn(queue=CARS)
def hold_sync(release_file: str) -> str:
    """A synchronous activity (it runs in a thread) that waits for ``release_file``."""
    record("started")
    deadline = time.monotonic() + 300
    while not Path(release_file).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


STEP = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))
TIMEOUT = timedelta(minutes=5)


@workflow.defn(name="E2ETrip")
class Trip:
    @workflow.run
    async def run(self, trip: TripRequest) -> dict[str, str]:
        async with Saga(parallel_compensation=True) as saga:
            car = await workflow.execute_activity(
                reserve_car, trip, start_to_close_timeout=TIMEOUT, retry_policy=STEP
            )
            saga.add_compensation(cancel_car, car)
            hotel = await workflow.execute_activity(
                book_hotel, trip, start_to_close_timeout=TIMEOUT, retry_policy=STEP
            )
            saga.add_compensation(cancel_hotel, hotel)
            flight = await workflow.execute_activity(
                book_flight, trip, start_to_close_timeout=TIMEOUT, retry_policy=STEP
            )
            saga.add_compensation(cancel_flight, flight)
        return {"car": car, "hotel": hotel, "flight": flight}


@workflow.defn(name="E2EApproval")
class Approval:
    """Waits for the ``approve`` signal: something to signal, cancel and terminate."""

    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, by: str) -> None:
        self.approved_by = by

    @workflow.run
    async def run(self, request: str) -> str:
        await workflow.wait_condition(lambda: self.approved_by is not None)
        return f"{request} approved by {self.approved_by}"


@workflow.defn(name="E2EHold")
class Hold:
    """One synchronous step that blocks its thread until released."""

    @workflow.run
    async def run(self, release_file: str) -> str:
        return await workflow.execute_activity(
            hold_sync, release_file, start_to_close_timeout=TIMEOUT, retry_policy=STEP
        )


def read_calls(path: Path) -> list[dict[str, Any]]:
    """Every line recorded so far (read under the writers' lock: no half lines)."""
    if not path.exists():
        return []
    with path.open() as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        text = f.read()
    return [json.loads(line) for line in text.splitlines() if line.strip()]

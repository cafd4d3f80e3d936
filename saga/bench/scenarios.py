"""The workflows ``saga bench`` drives. Coordinators and workers load this module.

Every scenario takes :class:`BenchParams`, so the driver can ask for simulated work,
a payload size and a failing last step without knowing the scenario.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from saga import ApplicationError, RetryPolicy, Saga, activity, workflow

QUEUE = "bench"
TIMEOUT = timedelta(seconds=60)
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)


class BenchParams(BaseModel):
    """What one saga of the run should do."""

    activity_time: float = 0.0
    payload: str = ""
    fail: bool = False
    sleep: float = 1.0


class Ledger:
    """Reservations held by the bench's fake services (per worker process)."""

    def __init__(self) -> None:
        self.active: Counter[str] = Counter()
        self.transient_failures: set[str] = set()

    def reset(self) -> None:
        """Forget everything (the embedded bench runs in the test's process)."""
        self.__init__()  # type: ignore[misc]


ledger = Ledger()


async def _work(params: BenchParams) -> None:
    if params.activity_time > 0:
        await asyncio.sleep(params.activity_time)


@activity.defn(queue=QUEUE)
async def bench_noop(params: BenchParams) -> str:
    """Simulated work; returns the payload."""
    await _work(params)
    return params.payload


@activity.defn(queue=QUEUE)
async def bench_reserve(kind: str, params: BenchParams) -> str:
    """Book a car, hotel or flight (the flight refuses when ``params.fail``)."""
    await _work(params)
    if params.fail and kind == "flight":
        raise ApplicationError("no seats", type="BookingRefused", non_retryable=True)
    key = activity.info().idempotency_key
    ledger.active[key] = 1
    return key


@activity.defn(queue=QUEUE)
async def bench_cancel(reservation: str) -> None:
    """Cancel a booking (the compensation)."""
    ledger.active.pop(reservation, None)


@activity.defn(queue=QUEUE)
async def bench_move(kind: str, params: BenchParams) -> str:
    """Withdraw, deposit (fails once, then succeeds) or refund."""
    await _work(params)
    key = activity.info().idempotency_key
    if kind == "deposit" and params.fail:
        raise ApplicationError("account closed", type="InvalidAccount", non_retryable=True)
    if kind == "deposit" and key not in ledger.transient_failures:
        ledger.transient_failures.add(key)  # every deposit fails once: retries are measured
        raise ApplicationError("bank unavailable", type="BankUnavailable")
    return key


@workflow.defn(name="bench-noop")
class Noop:
    """One activity."""

    @workflow.run
    async def run(self, params: BenchParams) -> str:  # noqa: D102
        return await workflow.execute_activity(
            bench_noop, params, start_to_close_timeout=TIMEOUT, retry_policy=RETRY
        )


@workflow.defn(name="bench-trip-booking")
class TripBooking:
    """Three bookings, compensated in parallel when the flight is refused."""

    @workflow.run
    async def run(self, params: BenchParams) -> list[str]:  # noqa: D102
        booked = []
        async with Saga(parallel_compensation=True) as saga:
            for kind in ("car", "hotel", "flight"):
                booked.append(
                    await workflow.execute_activity(
                        bench_reserve,
                        kind,
                        params,
                        start_to_close_timeout=TIMEOUT,
                        retry_policy=RETRY,
                    )
                )
                saga.add_compensation(bench_cancel, booked[-1])
        return booked


@workflow.defn(name="bench-money-transfer")
class MoneyTransfer:
    """Withdraw, then deposit with a retry; refund if the deposit is refused."""

    @workflow.run
    async def run(self, params: BenchParams) -> str:  # noqa: D102
        async with Saga() as saga:
            await workflow.execute_activity(
                bench_move, "withdraw", params, start_to_close_timeout=TIMEOUT, retry_policy=RETRY
            )
            saga.add_compensation(bench_move, "refund", params)
            deposited = await workflow.execute_activity(
                bench_move, "deposit", params, start_to_close_timeout=TIMEOUT, retry_policy=RETRY
            )
        return deposited


@workflow.defn(name="bench-timers")
class Timers:
    """A durable timer, then one activity."""

    @workflow.run
    async def run(self, params: BenchParams) -> str:  # noqa: D102
        await workflow.sleep(params.sleep)
        return await workflow.execute_activity(
            bench_noop, params, start_to_close_timeout=TIMEOUT, retry_policy=RETRY
        )


SCENARIOS: dict[str, tuple[Any, int]] = {
    "noop": (Noop, 1),
    "trip-booking": (TripBooking, 3),
    "money-transfer": (MoneyTransfer, 2),
    "timers": (Timers, 1),
}
"""Scenario name → (workflow, forward steps on the happy path)."""

WORKFLOWS = [Noop, TripBooking, MoneyTransfer, Timers]
ACTIVITIES = [bench_noop, bench_reserve, bench_cancel, bench_move]

"""Deliberately wrong versions of the examples, for the failure-explorer tests.

Each is a mistake real sagas ship with; ``test_explore`` checks the explorer names the
failure point that exposes it. The activities are the examples' own (the module is also
an ``--app`` for ``saga explore``).
"""

from __future__ import annotations

from datetime import timedelta

from examples.money_transfer.activities import Transfer, deposit, withdraw
from examples.money_transfer.workflows import RETRY
from examples.trip_booking.activities import (
    TripRequest,
    book_flight,
    book_hotel,
    cancel_car,
    cancel_flight,
    reserve_car,
)
from examples.trip_booking.workflows import STEP_OPTIONS
from saga import Saga, workflow

__all__ = ["MoneyTransferWithoutRefund", "TripCompensatesTheWrongStep", "TripMissingCompensation"]


@workflow.defn
class TripMissingCompensation:
    """Forgets to register the hotel's cancellation."""

    @workflow.run
    async def run(self, trip: TripRequest) -> dict[str, str]:
        async with Saga(parallel_compensation=True) as saga:
            car = await workflow.execute_activity(reserve_car, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_car, car)
            hotel = await workflow.execute_activity(book_hotel, trip, **STEP_OPTIONS)
            flight = await workflow.execute_activity(book_flight, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_flight, flight)
        return {"car": car, "hotel": hotel, "flight": flight}


@workflow.defn
class TripCompensatesTheWrongStep:
    """After booking the hotel, registers the car's cancellation (again) instead."""

    @workflow.run
    async def run(self, trip: TripRequest) -> dict[str, str]:
        async with Saga(parallel_compensation=True) as saga:
            car = await workflow.execute_activity(reserve_car, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_car, car)
            hotel = await workflow.execute_activity(book_hotel, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_car, car)  # should be cancel_hotel(hotel)
            flight = await workflow.execute_activity(book_flight, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_flight, flight)
        return {"car": car, "hotel": hotel, "flight": flight}


@workflow.defn
class MoneyTransferWithoutRefund:
    """Withdraws, then deposits, with no refund if the deposit cannot land."""

    @workflow.run
    async def run(self, transfer: Transfer) -> str:
        options = {"start_to_close_timeout": timedelta(minutes=1), "retry_policy": RETRY}
        withdrawal = await workflow.execute_activity(withdraw, transfer, **options)
        deposited = await workflow.execute_activity(deposit, transfer, **options)
        return f"transfer {transfer.reference} done: {withdrawal} -> {deposited}"

"""Trip booking: the classic saga. Car, hotel, flight; undo them all if one fails."""

from __future__ import annotations

from datetime import timedelta

from saga import RetryPolicy, Saga, workflow

from .activities import (
    TripRequest,
    book_flight,
    book_hotel,
    cancel_car,
    cancel_flight,
    cancel_hotel,
    reserve_car,
)

STEP_OPTIONS = {
    "start_to_close_timeout": timedelta(minutes=1),
    "retry_policy": RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)),
}


@workflow.defn
class TripBooking:
    @workflow.run
    async def run(self, trip: TripRequest) -> dict[str, str]:
        async with Saga(parallel_compensation=True) as saga:
            car = await workflow.execute_activity(reserve_car, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_car, car)
            hotel = await workflow.execute_activity(book_hotel, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_hotel, hotel)
            flight = await workflow.execute_activity(book_flight, trip, **STEP_OPTIONS)
            saga.add_compensation(cancel_flight, flight)
        return {"car": car, "hotel": hotel, "flight": flight}


WORKFLOWS = [TripBooking]

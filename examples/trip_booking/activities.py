"""Fake car, hotel and flight services, each deduplicating by idempotency key.

Each service keeps its reservations in memory (one per worker process); a test reads
``services`` to check that every reservation was cancelled exactly once. Cancellations
are deduplicated too: a task delivered twice (at-least-once) must not cancel twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from saga import ApplicationError, activity

Step = Literal["car", "hotel", "flight"]


class TripRequest(BaseModel):
    """Who travels, and (for demos and tests) which booking should fail."""

    name: str
    fail_at: Step | None = None


@dataclass
class Service:
    """Reservations by id, deduplicated by idempotency key."""

    kind: str
    by_key: dict[str, str] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    cancellations: Counter[str] = field(default_factory=Counter)
    cancelled_keys: set[str] = field(default_factory=set)
    calls: int = 0

    def reserve(self, key: str, name: str, fail: bool) -> str:
        self.calls += 1
        if fail:
            raise ApplicationError(
                f"no {self.kind} available for {name}", type="BookingRefused", non_retryable=True
            )
        if key not in self.by_key:  # a retried or redelivered call books nothing new
            reservation = f"{self.kind}-{len(self.by_key) + 1}-{name}"
            self.by_key[key] = reservation
            self.active[reservation] = name
        return self.by_key[key]

    def cancel(self, key: str, reservation: str) -> None:
        if key in self.cancelled_keys:  # a redelivered cancellation cancels nothing new
            return
        self.cancelled_keys.add(key)
        self.cancellations[reservation] += 1
        self.active.pop(reservation, None)


@dataclass
class Services:
    car: Service = field(default_factory=lambda: Service("car"))
    hotel: Service = field(default_factory=lambda: Service("hotel"))
    flight: Service = field(default_factory=lambda: Service("flight"))

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


services = Services()


@activity.defn(queue="cars")
async def reserve_car(trip: TripRequest) -> str:
    return services.car.reserve(activity.info().idempotency_key, trip.name, trip.fail_at == "car")


@activity.defn(queue="cars")
async def cancel_car(reservation_id: str) -> None:
    services.car.cancel(activity.info().idempotency_key, reservation_id)


@activity.defn(queue="hotels")
async def book_hotel(trip: TripRequest) -> str:
    key = activity.info().idempotency_key
    return services.hotel.reserve(key, trip.name, trip.fail_at == "hotel")


@activity.defn(queue="hotels")
async def cancel_hotel(reservation_id: str) -> None:
    services.hotel.cancel(activity.info().idempotency_key, reservation_id)


@activity.defn(queue="flights")
async def book_flight(trip: TripRequest) -> str:
    key = activity.info().idempotency_key
    return services.flight.reserve(key, trip.name, trip.fail_at == "flight")


@activity.defn(queue="flights")
async def cancel_flight(reservation_id: str) -> None:
    services.flight.cancel(activity.info().idempotency_key, reservation_id)


ACTIVITIES = [reserve_car, cancel_car, book_hotel, cancel_hotel, book_flight, cancel_flight]

"""What the failure explorer checks for trip booking (``saga explore --checks``).

```bash
saga explore --app examples.trip_booking.workflows TripBooking \
    --input '{"name": "alice"}' --checks examples.trip_booking.checks
```
"""

from __future__ import annotations

from typing import Any

from saga import WorkflowStatus

from .activities import (
    book_flight,
    book_hotel,
    cancel_car,
    cancel_flight,
    cancel_hotel,
    reserve_car,
    services,
)

COMPENSATIONS = {reserve_car: cancel_car, book_hotel: cancel_hotel, book_flight: cancel_flight}
"""Which cancellation undoes which booking."""


def reset() -> None:
    """Empty every service before a run."""
    services.reset()


def state() -> dict[str, dict[str, Any]]:
    """What each service holds after a run: the ``services_state`` of the invariant."""
    return {
        s.kind: {
            "booked": sorted(s.by_key.values()),
            "active": sorted(s.active),
            "cancellations": dict(s.cancellations),
        }
        for s in (services.car, services.hotel, services.flight)
    }


def invariant(services_state: dict[str, dict[str, Any]], outcome: Any) -> None:
    """Nothing booked twice or cancelled twice; all kept if COMPLETED, none kept otherwise."""
    for kind, s in services_state.items():
        assert len(s["booked"]) <= 1, f"{kind} booked {len(s['booked'])} times: {s['booked']}"
        twice = {r: n for r, n in s["cancellations"].items() if n > 1}
        assert not twice, f"{kind} cancelled more than once: {twice}"
        assert set(s["cancellations"]) <= set(s["booked"]), f"{kind}: cancelled, never booked"
        if outcome.status is WorkflowStatus.COMPLETED:
            assert len(s["active"]) == 1, f"{kind}: {s['active']} held after COMPLETED"
        elif outcome.status is not WorkflowStatus.COMPENSATION_FAILED:  # a human must look
            assert not s["active"], f"{kind}: {s['active']} still held after {outcome.status}"

"""The two examples, happy and failure paths, through WorkflowEnvironment.

The fake services keep their state in this process, so the tests can check that the
saga left them consistent: nothing booked twice, everything undone exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from examples.money_transfer import activities as bank_activities
from examples.money_transfer.activities import Transfer, bank
from examples.money_transfer.workflows import MoneyTransfer
from examples.trip_booking import activities as trip_activities
from examples.trip_booking.activities import TripRequest, services
from examples.trip_booking.workflows import TripBooking
from saga.errors import ActivityError, WorkflowFailureError
from saga.history import WorkflowStatus
from saga.testing import WorkflowEnvironment

WAIT = 30.0


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    bank.reset()
    yield
    services.reset()
    bank.reset()


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment(
        workflows=[TripBooking, MoneyTransfer],
        activities=[*trip_activities.ACTIVITIES, *bank_activities.ACTIVITIES],
        database_url=database_url,
        time_skipping=True,
    ) as environment:
        yield environment


# --- trip booking -----------------------------------------------------------------------------
async def test_trip_booking_books_everything(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(TripBooking.run, TripRequest(name="alice"), id="trip")

    result = await handle.result(timeout=WAIT)

    assert result == {"car": "car-1-alice", "hotel": "hotel-1-alice", "flight": "flight-1-alice"}
    for service in (services.car, services.hotel, services.flight):
        assert list(service.active) == [f"{service.kind}-1-alice"]
        assert not service.cancellations
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.COMPLETED
    assert desc.compensations == []


@pytest.mark.parametrize("fail_at", ["flight", "hotel"])
async def test_trip_booking_failure_cancels_every_reservation_exactly_once(
    env: WorkflowEnvironment, fail_at: str
) -> None:
    trip = TripRequest(name="alice", fail_at=fail_at)
    handle = await env.client.start_workflow(TripBooking.run, trip, id=f"trip-{fail_at}")

    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=WAIT)

    assert info.value.status == "COMPENSATED"
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert "BookingRefused" in str(cause)
    booked = [s for s in (services.car, services.hotel, services.flight) if s.by_key]
    assert [s.kind for s in booked] == (["car", "hotel"] if fail_at == "flight" else ["car"])
    for service in (services.car, services.hotel, services.flight):
        assert service.active == {}
        assert all(n == 1 for n in service.cancellations.values()), service.cancellations
        assert set(service.cancellations) == set(service.by_key.values())
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.COMPENSATED
    assert all(c.status == "COMPLETED" for c in desc.compensations)
    assert len(desc.compensations) == len(booked)


async def test_trip_booking_first_step_fails_nothing_to_undo(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(
        TripBooking.run, TripRequest(name="alice", fail_at="car"), id="trip-car"
    )

    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=WAIT)

    assert info.value.status == "FAILED"
    assert services.car.calls == 1 and services.hotel.calls == 0
    assert all(not s.cancellations for s in (services.car, services.hotel, services.flight))


# --- money transfer ---------------------------------------------------------------------------
async def test_money_transfer_survives_a_deposit_outage(env: WorkflowEnvironment) -> None:
    bank.deposit_outage = 3
    transfer = Transfer(source="alice", target="bob", amount=50, reference="t-1")
    handle = await env.client.start_workflow(MoneyTransfer.run, transfer, id="transfer")

    result = await handle.result(timeout=WAIT)

    assert result.startswith("transfer t-1 done")
    assert bank.balances == {"alice": 50, "bob": 50}
    assert bank.calls == {"withdraw": 1, "deposit": 4, "refund": 0}
    desc = await handle.describe()
    steps = {s.activity: s for s in desc.steps}
    assert (steps["withdraw"].status, steps["withdraw"].attempts) == ("COMPLETED", 1)
    assert (steps["deposit"].status, steps["deposit"].attempts) == ("COMPLETED", 4)
    assert desc.compensations == []


async def test_money_transfer_to_an_invalid_account_is_refunded(env: WorkflowEnvironment) -> None:
    transfer = Transfer(source="alice", target="mallory", amount=50, reference="t-2")
    handle = await env.client.start_workflow(MoneyTransfer.run, transfer, id="transfer-invalid")

    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=WAIT)

    assert info.value.status == "COMPENSATED"
    assert "InvalidAccount" in str(info.value.cause)
    assert bank.balances == {"alice": 100, "bob": 0}
    assert bank.calls == {"withdraw": 1, "deposit": 1, "refund": 1}
    desc = await handle.describe()
    assert [(c.activity, c.status, c.attempts) for c in desc.compensations] == [
        ("refund", "COMPLETED", 1)
    ]
    steps = {s.activity: s for s in desc.steps}
    assert (steps["deposit"].status, steps["deposit"].attempts) == ("FAILED", 1)


async def test_money_transfer_with_insufficient_funds_fails_untouched(
    env: WorkflowEnvironment,
) -> None:
    transfer = Transfer(source="alice", target="bob", amount=500, reference="t-3")
    handle = await env.client.start_workflow(MoneyTransfer.run, transfer, id="transfer-poor")

    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=WAIT)

    assert info.value.status == "FAILED"
    assert "InsufficientFunds" in str(info.value.cause)
    assert bank.balances == {"alice": 100, "bob": 0}
    assert bank.calls == {"withdraw": 1, "deposit": 0, "refund": 0}
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.FAILED
    assert desc.compensations == []

"""The subscription and shopping-cart examples: long waits, signals, queries.

Time skipping makes months of billing take no time; the tests that must act *during*
a wait (cancel in the trial, query as periods go by) run on the real clock with waits
long enough to act in, or short enough to watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from examples.subscription import activities
from examples.subscription.activities import (
    CartItem,
    CartSettings,
    Customer,
    SubscriptionRequest,
    billing,
    mail,
)
from examples.subscription.workflows import WORKFLOWS, ShoppingCart, Subscription
from saga.testing import WorkflowEnvironment
from tests.integration.engine_helpers import WAIT, eventually, types_of

ALICE = Customer(id="alice", email="alice@example.com", name="Alice")


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    activities.reset()
    yield
    activities.reset()


def environment(database_url: str, *, time_skipping: bool) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=WORKFLOWS,
        activities=activities.ACTIVITIES,
        database_url=database_url,
        time_skipping=time_skipping,
    )


@pytest.fixture
async def skipping(database_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with environment(database_url, time_skipping=True) as env:
        yield env


@pytest.fixture
async def real_time(database_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with environment(database_url, time_skipping=False) as env:
        yield env


def plan(**fields: Any) -> SubscriptionRequest:
    days = {"trial_period": timedelta(days=1), "billing_period": timedelta(days=1)}
    return SubscriptionRequest(customer=ALICE, **{**days, **fields})


async def waiting_on_timer(handle: Any, count: int) -> None:
    async def seen() -> bool:
        return (await types_of(handle)).count("TimerStarted") >= count

    await eventually(seen, what=f"timer {count} of {handle.id}")


# --- subscription ------------------------------------------------------------------------------
async def test_three_daily_periods_bill_330_almost_at_once(skipping: WorkflowEnvironment) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    request = plan(max_periods=3, charge=100, charge_increase=10)
    handle = await skipping.client.start_workflow(Subscription.run, request, id="sub-330")

    result = await handle.result(timeout=WAIT)

    assert loop.time() - began < 10  # four simulated days
    assert result == {
        "customer_id": "alice",
        "status": "completed",
        "periods_charged": 3,
        "total_charged": 330,
    }
    assert billing.of("alice") == [100, 110, 120]
    assert mail.kinds() == ["welcome", "trial over", "subscription over"]
    events = await handle.history()
    assert events[-1].timestamp - events[0].timestamp >= timedelta(days=4)
    assert await handle.query("billing_period_number") == 3  # a closed one answers too


async def test_cancel_during_the_trial_charges_nothing(real_time: WorkflowEnvironment) -> None:
    handle = await real_time.client.start_workflow(Subscription.run, plan(), id="sub-trial")
    await waiting_on_timer(handle, 1)  # in the trial
    assert await handle.query("billing_period_number") == 0

    await handle.signal("cancel")

    result = await handle.result(timeout=WAIT)
    assert result["status"] == "cancelled during trial"
    assert result["total_charged"] == 0
    assert billing.of("alice") == []
    assert mail.kinds() == ["welcome", "cancelled during trial"]


async def test_cancel_during_billing_charges_no_further(real_time: WorkflowEnvironment) -> None:
    request = plan(trial_period=timedelta(0), max_periods=12, charge=100)
    handle = await real_time.client.start_workflow(Subscription.run, request, id="sub-billing")
    await waiting_on_timer(handle, 1)  # no trial (no timer): period 1 is running
    assert await handle.query("billing_period_number") == 1

    await handle.signal("cancel")

    result = await handle.result(timeout=WAIT)
    assert (result["status"], result["periods_charged"], result["total_charged"]) == (
        "cancelled",
        1,
        100,
    )
    assert billing.of("alice") == [100]
    assert mail.kinds()[-1] == "cancelled"


async def test_queries_follow_the_periods_and_a_signal_changes_the_charge(
    real_time: WorkflowEnvironment,
) -> None:
    request = plan(
        trial_period=timedelta(seconds=0.3),
        billing_period=timedelta(seconds=0.6),
        max_periods=3,
        charge=100,
    )
    handle = await real_time.client.start_workflow(Subscription.run, request, id="sub-watch")
    assert await handle.query("customer_id") == "alice"
    seen: list[int] = []
    changed = False
    while not (await handle.describe()).status.is_closed:
        period = await handle.query("billing_period_number")
        if not seen or seen[-1] != period:
            seen.append(period)
        if period == 1 and not changed:
            await handle.signal("change_charge", 150)
            changed = True
        await asyncio.sleep(0.02)
    assert seen == [0, 1, 2, 3]
    assert await handle.query("current_charge") == 150
    assert billing.of("alice") == [100, 150, 150]
    assert (await handle.result(timeout=WAIT))["total_charged"] == 400


async def test_a_long_subscription_continues_as_new_and_keeps_its_state(
    skipping: WorkflowEnvironment,
) -> None:
    request = plan(max_periods=7, charge=10, charge_increase=1, periods_per_run=3)
    handle = await skipping.client.start_workflow(Subscription.run, request, id="sub-years")
    result = await handle.result(timeout=WAIT)
    assert result["total_charged"] == sum(range(10, 17))
    assert billing.of("alice") == list(range(10, 17))
    desc = await handle.describe()
    assert desc.run_id != handle.run_id  # runs of 3, 3, then 1 period
    assert desc.input[1] == {"period": 6, "charge": 16, "total_charged": sum(range(10, 16))}
    assert mail.kinds() == ["welcome", "trial over", "subscription over"]  # welcomed once


# --- shopping cart -----------------------------------------------------------------------------
ESPRESSO = CartItem(sku="espresso", price=450, quantity=2)
GRINDER = CartItem(sku="grinder", price=8900)


async def start_cart(env: WorkflowEnvironment, item: CartItem, **settings: Any) -> Any:
    return await env.client.start_workflow(
        ShoppingCart.run,
        ALICE,
        CartSettings(**settings),
        id="cart-alice",
        start_signal="add_item",
        start_signal_args=[item],
    )


async def test_an_abandoned_cart_gets_one_reminder_then_gives_up(
    skipping: WorkflowEnvironment,
) -> None:
    handle = await start_cart(skipping, ESPRESSO)
    result = await handle.result(timeout=WAIT)
    assert result["status"] == "abandoned"
    assert result["reminders"] == 1
    assert mail.kinds() == ["cart reminder"]
    assert "espresso" in mail.sent[0].text
    assert billing.orders == {}


async def test_a_checkout_before_the_delay_sends_no_reminder(
    real_time: WorkflowEnvironment,
) -> None:
    handle = await start_cart(real_time, ESPRESSO, remind_after=timedelta(hours=1))
    again = await start_cart(real_time, GRINDER)  # signal-with-start: the same cart
    assert again.run_id == handle.run_id
    await handle.signal("add_item", ESPRESSO)

    async def three_lines() -> bool:
        return bool(await handle.query("total") == 4 * 450 + 8900)

    await eventually(three_lines, what="everything in the cart")
    await handle.signal("checkout")

    result = await handle.result(timeout=WAIT)
    assert (result["status"], result["total"], result["order_id"]) == (
        "ordered",
        4 * 450 + 8900,
        "order-alice-1",
    )
    assert [i["sku"] for i in result["items"]] == ["espresso", "grinder"]
    assert mail.kinds() == []  # no reminder

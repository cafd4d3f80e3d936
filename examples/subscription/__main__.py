"""``python -m examples.subscription``: months of billing and a forgotten cart, in seconds.

Embedded (coordinator, worker, SQLite in memory, in-process broker) with time skipping.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from saga.testing import WorkflowEnvironment

from . import activities
from .activities import CartItem, CartSettings, Customer, SubscriptionRequest, billing, mail
from .workflows import WORKFLOWS, ShoppingCart, Subscription


async def main() -> int:
    alice = Customer(id="alice", email="alice@example.com", name="Alice")
    async with WorkflowEnvironment(
        workflows=WORKFLOWS, activities=activities.ACTIVITIES, time_skipping=True
    ) as env:
        plan = SubscriptionRequest(
            customer=alice,
            trial_period=timedelta(days=30),
            billing_period=timedelta(days=30),
            max_periods=12,
            charge=100,
            charge_increase=10,
        )
        sub = await env.client.start_workflow(Subscription.run, plan, id="sub-alice")
        summary = await sub.result(timeout=60)
        print(f"subscription: {summary}")
        print(f"  charges: {billing.of('alice')}")
        print(f"  billing period now: {await sub.query('billing_period_number')}")

        cart = await env.client.start_workflow(
            ShoppingCart.run,
            alice,
            CartSettings(remind_after=timedelta(hours=24), abandon_after=timedelta(days=7)),
            id="cart-alice",
            start_signal="add_item",
            start_signal_args=[CartItem(sku="espresso", price=450, quantity=2)],
        )
        outcome = await cart.result(timeout=60)
        print(f"cart: {outcome['status']} after {outcome['reminders']} reminder(s)")
        print(f"e-mails: {mail.kinds()}")
    ok = summary["total_charged"] == sum(100 + 10 * i for i in range(12))
    return 0 if ok and outcome["status"] == "abandoned" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

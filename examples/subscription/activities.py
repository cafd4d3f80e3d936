"""Fake e-mail and billing services for the subscription and shopping-cart examples.

Each service keeps what it did in memory (one per worker process) and deduplicates by
``activity.info().idempotency_key``: a retried or redelivered task sends no second
e-mail and charges no second time, as a real service keyed on it would not. Tests read
``mail`` and ``billing`` to check exactly what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel

from saga import activity


class Customer(BaseModel):
    """Who subscribes (or shops)."""

    id: str
    email: str
    name: str = ""


class SubscriptionRequest(BaseModel):
    """A plan: a free trial, then ``max_periods`` billing periods.

    Durations are seconds or ISO 8601 (``"P30D"``). The charge of the first period is
    ``charge``; each later period costs ``charge_increase`` more (0: a flat price). A
    ``change_charge`` signal sets the price of the periods still to come.
    """

    customer: Customer
    trial_period: timedelta = timedelta(days=30)
    billing_period: timedelta = timedelta(days=30)
    max_periods: int = 12
    charge: int = 100
    charge_increase: int = 0
    periods_per_run: int = 24
    """Billing periods in one run's history before it continues as new."""


class SubscriptionState(BaseModel):
    """What a subscription carries from one run to the next (continue-as-new)."""

    period: int = 0
    charge: int = 0
    total_charged: int = 0


class SubscriptionSummary(BaseModel):
    """How a subscription ended."""

    customer_id: str
    status: str  # "completed", "cancelled during trial", "cancelled"
    periods_charged: int
    total_charged: int


class ChargeRequest(BaseModel):
    """One period's charge."""

    customer_id: str
    period: int
    amount: int


class CartItem(BaseModel):
    """A line of a shopping cart; ``price`` in cents, per unit."""

    sku: str
    price: int
    quantity: int = 1


class CartSettings(BaseModel):
    """When an untouched cart gets its reminder, and when it is given up."""

    remind_after: timedelta = timedelta(hours=24)
    abandon_after: timedelta = timedelta(days=7)


class CartOutcome(BaseModel):
    """How a cart ended: ordered (with the order id) or abandoned."""

    customer_id: str
    status: str  # "ordered" or "abandoned"
    items: list[CartItem]
    total: int
    order_id: str | None = None
    reminders: int = 0


@dataclass
class Email:
    """One e-mail as the fake mailer sent it."""

    to: str
    kind: str
    text: str


@dataclass
class Mailer:
    """Sent e-mails, at most one per idempotency key."""

    sent: list[Email] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def send(self, key: str, to: str, kind: str, text: str) -> None:
        if key in self.keys:  # a redelivered task sends nothing new
            return
        self.keys.add(key)
        self.sent.append(Email(to, kind, text))

    def kinds(self, to: str | None = None) -> list[str]:
        return [e.kind for e in self.sent if to is None or e.to == to]


@dataclass
class Billing:
    """Charges by idempotency key: a retried charge is not charged twice."""

    charges: dict[str, ChargeRequest] = field(default_factory=dict)
    orders: dict[str, str] = field(default_factory=dict)

    def of(self, customer_id: str) -> list[int]:
        return [c.amount for c in self.charges.values() if c.customer_id == customer_id]


mail = Mailer()
billing = Billing()


def reset() -> None:
    """Forget every e-mail and charge (tests and demos)."""
    mail.__init__()  # type: ignore[misc]
    billing.__init__()  # type: ignore[misc]


# --- e-mail ---------------------------------------------------------------------------------
@activity.defn(queue="email")
async def send_welcome_email(customer: Customer) -> None:
    mail.send(
        activity.info().idempotency_key,
        customer.email,
        "welcome",
        f"Welcome, {customer.name or customer.id}! Your free trial starts now.",
    )


@activity.defn(queue="email")
async def send_trial_over_email(customer: Customer) -> None:
    mail.send(
        activity.info().idempotency_key,
        customer.email,
        "trial over",
        "Your trial is over; your subscription starts today.",
    )


@activity.defn(queue="email")
async def send_cancellation_email(customer: Customer, during_trial: bool) -> None:
    kind = "cancelled during trial" if during_trial else "cancelled"
    mail.send(
        activity.info().idempotency_key,
        customer.email,
        kind,
        "Your subscription is cancelled. We are sorry to see you go.",
    )


@activity.defn(queue="email")
async def send_subscription_over_email(customer: Customer) -> None:
    mail.send(
        activity.info().idempotency_key,
        customer.email,
        "subscription over",
        "Your subscription has ended. Thank you for staying with us!",
    )


@activity.defn(queue="email")
async def send_cart_reminder_email(customer: Customer, items: list[CartItem]) -> None:
    names = ", ".join(item.sku for item in items)
    mail.send(
        activity.info().idempotency_key,
        customer.email,
        "cart reminder",
        f"You left {names} in your cart. Still interested?",
    )


# --- billing --------------------------------------------------------------------------------
@activity.defn(queue="billing")
async def charge_customer(request: ChargeRequest) -> str:
    """Charge one period; returns the receipt id (the same one for a retried charge)."""
    key = activity.info().idempotency_key
    billing.charges.setdefault(key, request)
    return f"receipt-{request.customer_id}-{request.period}"


@activity.defn(queue="billing")
async def place_order(customer: Customer, items: list[CartItem]) -> str:
    """Charge a cart and create the order; returns the order id."""
    key = activity.info().idempotency_key
    if key not in billing.orders:
        billing.orders[key] = f"order-{customer.id}-{len(billing.orders) + 1}"
    return billing.orders[key]


ACTIVITIES = [
    send_welcome_email,
    send_trial_over_email,
    send_cancellation_email,
    send_subscription_over_email,
    send_cart_reminder_email,
    charge_customer,
    place_order,
]

"""Fake stock, payment and shipping services for the shop (in memory, one worker process)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from saga import ApplicationError, activity


class Order(BaseModel):
    """What the customer bought; ``fail_at`` makes one service refuse (demos, tests)."""

    order_id: str
    sku: str
    amount_cents: int
    quantity: int = 1
    fail_at: Literal["payment", "shipping"] | None = None


@activity.defn(queue="shop")
async def reserve_stock(order: Order) -> str:
    return f"stock-{order.order_id}-{order.sku}x{order.quantity}"


@activity.defn(queue="shop")
async def release_stock(reservation: str) -> None:
    return None


@activity.defn(queue="shop")
async def charge_card(order: Order) -> str:
    if order.fail_at == "payment":
        raise ApplicationError("card declined", type="PaymentDeclined", non_retryable=True)
    return f"charge-{order.order_id}-{order.amount_cents}"


@activity.defn(queue="shop")
async def refund_card(charge: str) -> None:
    return None


@activity.defn(queue="shop")
async def ship(order: Order) -> str:
    if order.fail_at == "shipping":
        raise ApplicationError("no courier available", type="ShippingFailed", non_retryable=True)
    return f"parcel-{order.order_id}"

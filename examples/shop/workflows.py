"""The shop's order saga: reserve stock, charge, ship; big orders wait for a person first."""

from __future__ import annotations

from datetime import timedelta

from saga import ApplicationError, RetryPolicy, Saga, workflow

from .activities import Order, charge_card, refund_card, release_stock, reserve_stock, ship

APPROVAL_THRESHOLD_CENTS = 100_000
STEP = {
    "start_to_close_timeout": timedelta(minutes=1),
    "retry_policy": RetryPolicy(maximum_attempts=3, non_retryable_error_types=["PaymentDeclined"]),
}


@workflow.defn
class PlaceOrder:
    def __init__(self) -> None:
        self.stage = "received"
        self.approved_by: str | None = None
        self.rejected: str | None = None

    @workflow.signal
    def approve(self, by: str) -> None:
        self.approved_by = by

    @workflow.signal
    def reject(self, reason: str) -> None:
        self.rejected = reason

    @workflow.query
    def status(self) -> str:
        return self.stage

    @workflow.run
    async def run(self, order: Order) -> dict[str, str]:
        async with Saga() as saga:  # a failure below undoes what was done, newest first
            stock = await workflow.execute_activity(reserve_stock, order, **STEP)
            saga.add_compensation(release_stock, stock)
            if order.amount_cents >= APPROVAL_THRESHOLD_CENTS:
                self.stage = "awaiting approval"
                await workflow.wait_condition(
                    lambda: self.approved_by is not None or self.rejected is not None,
                    timeout=timedelta(days=1),
                )
                if self.rejected is not None:
                    raise ApplicationError(
                        f"order rejected: {self.rejected}", type="OrderRejected", non_retryable=True
                    )
            self.stage = "charging"
            charge = await workflow.execute_activity(charge_card, order, **STEP)
            saga.add_compensation(refund_card, charge)
            self.stage = "shipping"
            parcel = await workflow.execute_activity(ship, order, **STEP)
        self.stage = "done"
        return {"stock": stock, "charge": charge, "parcel": parcel}


WORKFLOWS = [PlaceOrder]

"""Long-running sagas: a subscription billed for months, and a cart that sends a reminder.

Both wait most of their lives on durable timers (``workflow.wait_condition`` with a
timeout), are steered by signals, and answer queries about where they stand.
"""

from __future__ import annotations

from datetime import timedelta

from saga import RetryPolicy, workflow

from .activities import (
    CartItem,
    CartOutcome,
    CartSettings,
    ChargeRequest,
    Customer,
    SubscriptionRequest,
    SubscriptionState,
    SubscriptionSummary,
    charge_customer,
    place_order,
    send_cancellation_email,
    send_cart_reminder_email,
    send_subscription_over_email,
    send_trial_over_email,
    send_welcome_email,
)

EMAIL = {"start_to_close_timeout": timedelta(minutes=1)}
BILLING = {
    "start_to_close_timeout": timedelta(minutes=1),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=0),
}


@workflow.defn
class Subscription:
    """A free trial, then a charge at the start of each billing period, up to a maximum.

    Signals: ``cancel`` (no further charge), ``change_charge(amount)`` (the price of the
    periods still to come). Queries: ``customer_id``, ``billing_period_number`` (0
    during the trial), ``current_charge``.
    """

    def __init__(self) -> None:
        self.customer = Customer(id="", email="")
        self.state = SubscriptionState()
        self.cancelled = False

    @workflow.signal
    def cancel(self) -> None:
        self.cancelled = True

    @workflow.signal
    def change_charge(self, amount: int) -> None:
        self.state.charge = amount

    @workflow.query(name="customer_id")
    def get_customer_id(self) -> str:
        return self.customer.id

    @workflow.query(name="billing_period_number")
    def get_billing_period_number(self) -> int:
        return self.state.period

    @workflow.query(name="current_charge")
    def get_current_charge(self) -> int:
        return self.state.charge

    @workflow.run
    async def run(
        self, request: SubscriptionRequest, carried: SubscriptionState | None = None
    ) -> SubscriptionSummary:
        self.customer = request.customer
        if carried is None:  # the first run: welcome, and the trial
            self.state = SubscriptionState(charge=request.charge)
            await workflow.execute_activity(send_welcome_email, self.customer, **EMAIL)
            if await self._cancelled_within(request.trial_period):
                await workflow.execute_activity(
                    send_cancellation_email, self.customer, True, **EMAIL
                )
                return self._summary("cancelled during trial")
            await workflow.execute_activity(send_trial_over_email, self.customer, **EMAIL)
        else:  # a later run (continue-as-new): go on where the last one stopped
            self.state = carried
        periods_this_run = 0
        while self.state.period < request.max_periods:
            if periods_this_run == request.periods_per_run:
                # Years of billing would make a long history: start a fresh one.
                workflow.continue_as_new(request, self.state)
            self.state.period += 1
            periods_this_run += 1
            charge = ChargeRequest(
                customer_id=self.customer.id, period=self.state.period, amount=self.state.charge
            )
            await workflow.execute_activity(charge_customer, charge, **BILLING)
            self.state.total_charged += charge.amount
            if await self._cancelled_within(request.billing_period):
                await workflow.execute_activity(
                    send_cancellation_email, self.customer, False, **EMAIL
                )
                return self._summary("cancelled")
            self.state.charge += request.charge_increase
        await workflow.execute_activity(send_subscription_over_email, self.customer, **EMAIL)
        return self._summary("completed")

    async def _cancelled_within(self, period: timedelta) -> bool:
        """Wait out ``period`` (a durable timer); True if a cancel came first."""
        try:
            await workflow.wait_condition(lambda: self.cancelled, timeout=period)
        except TimeoutError:
            return False
        return True

    def _summary(self, status: str) -> SubscriptionSummary:
        return SubscriptionSummary(
            customer_id=self.customer.id,
            status=status,
            periods_charged=self.state.period,
            total_charged=self.state.total_charged,
        )


@workflow.defn
class ShoppingCart:
    """A cart that reminds its customer when left alone, and gives up after a while.

    Start it with signal-with-start on the first ``add_item``, one cart per customer::

        await client.start_workflow(ShoppingCart.run, customer, id=f"cart-{customer.id}",
                                    start_signal="add_item", start_signal_args=[item])

    Signals: ``add_item(item)``, ``remove_item(sku)``, ``checkout``. Queries: ``items``,
    ``total``. Left untouched for ``settings.remind_after``, the cart sends one reminder
    e-mail; untouched for ``settings.abandon_after`` more, it ends ``abandoned``. Any
    change starts the wait again; a checkout places the order at once.
    """

    def __init__(self) -> None:
        self.lines: dict[str, CartItem] = {}
        self.changes = 0
        self.checked_out = False

    @workflow.signal
    def add_item(self, item: CartItem) -> None:
        if (line := self.lines.get(item.sku)) is not None:
            item = item.model_copy(update={"quantity": line.quantity + item.quantity})
        self.lines[item.sku] = item
        self.changes += 1

    @workflow.signal
    def remove_item(self, sku: str) -> None:
        self.lines.pop(sku, None)
        self.changes += 1

    @workflow.signal
    def checkout(self) -> None:
        self.checked_out = True

    @workflow.query
    def items(self) -> list[CartItem]:
        return list(self.lines.values())

    @workflow.query
    def total(self) -> int:
        return sum(line.price * line.quantity for line in self.lines.values())

    @workflow.run
    async def run(self, customer: Customer, settings: CartSettings | None = None) -> CartOutcome:
        settings = settings or CartSettings()
        reminders = 0
        wait = settings.remind_after
        while True:
            try:
                await workflow.wait_condition(
                    lambda seen=self.changes: self.checked_out or self.changes != seen,
                    timeout=wait,
                )
            except TimeoutError:
                if reminders == 0 and self.lines:
                    await workflow.execute_activity(
                        send_cart_reminder_email, customer, self.items(), **EMAIL
                    )
                    reminders += 1
                    wait = settings.abandon_after
                    continue
                return self._outcome(customer, "abandoned", reminders)
            if self.checked_out and self.lines:
                order_id = await workflow.execute_activity(
                    place_order, customer, self.items(), **BILLING
                )
                return self._outcome(customer, "ordered", reminders, order_id)
            self.checked_out = False  # an empty cart cannot be checked out
            wait = settings.remind_after  # touched: the customer is back

    def _outcome(
        self, customer: Customer, status: str, reminders: int, order_id: str | None = None
    ) -> CartOutcome:
        return CartOutcome(
            customer_id=customer.id,
            status=status,
            items=self.items(),
            total=self.total(),
            order_id=order_id,
            reminders=reminders,
        )


WORKFLOWS = [Subscription, ShoppingCart]

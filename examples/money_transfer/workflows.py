"""Money transfer: withdraw, then deposit with patient retries; refund if it cannot land."""

from __future__ import annotations

from datetime import timedelta

from saga import RetryPolicy, Saga, workflow

from .activities import Transfer, deposit, refund, withdraw

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=500,
    non_retryable_error_types=("InsufficientFunds", "InvalidAccount"),
)


@workflow.defn
class MoneyTransfer:
    @workflow.run
    async def run(self, transfer: Transfer) -> str:
        async with Saga() as saga:
            withdrawal = await workflow.execute_activity(
                withdraw, transfer, start_to_close_timeout=timedelta(minutes=1), retry_policy=RETRY
            )
            saga.add_compensation(refund, transfer)
            deposited = await workflow.execute_activity(
                deposit, transfer, start_to_close_timeout=timedelta(minutes=1), retry_policy=RETRY
            )
        return f"transfer {transfer.reference} done: {withdrawal} -> {deposited}"


WORKFLOWS = [MoneyTransfer]

"""The money-transfer example's bank applies each step once per idempotency key.

Delivery is at least once: a task redelivered after a worker died, or republished by
the outbox relay of a coordinator that took over, runs the activity again with the same
``activity.info().idempotency_key``. The bank must not move the money a second time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.money_transfer.activities import Transfer, bank, deposit, refund, withdraw
from saga.testing import ActivityEnvironment

TRANSFER = Transfer(source="alice", target="bob", amount=30, reference="t-1")


@pytest.fixture(autouse=True)
def fresh_bank() -> Iterator[None]:
    bank.reset()
    yield
    bank.reset()


def step(seq: int, attempt: int = 1, workflow_id: str = "t-1") -> ActivityEnvironment:
    return ActivityEnvironment(workflow_id=workflow_id, run_id="run-1", seq=seq, attempt=attempt)


async def test_a_withdrawal_run_again_with_its_key_takes_the_money_once() -> None:
    first = await step(1).run(withdraw, TRANSFER)
    again = await step(1, attempt=2).run(withdraw, TRANSFER)  # a retry or a redelivery
    assert first == again == "t-1/run-1/1"
    assert bank.balances == {"alice": 70, "bob": 0}
    assert bank.calls["withdraw"] == 2  # it did run twice; the key absorbed the second


async def test_every_step_is_deduplicated_under_its_own_key() -> None:
    for _ in range(2):  # the whole saga delivered twice over
        await step(1).run(withdraw, TRANSFER)
        await step(2).run(deposit, TRANSFER)
        await step(3).run(refund, TRANSFER)
    assert bank.balances == {"alice": 100, "bob": 30}
    assert bank.applied == {"t-1/run-1/1", "t-1/run-1/2", "t-1/run-1/3"}


async def test_another_transfer_has_another_key_and_moves_money_again() -> None:
    await step(1).run(withdraw, TRANSFER)
    await step(1, workflow_id="t-2").run(withdraw, TRANSFER)
    assert bank.balances == {"alice": 40, "bob": 0}

"""A fake bank: accounts, withdrawals and deposits deduplicated by idempotency key.

``bank.deposit_outage`` makes the next N deposits fail (the bank is down), which is how
the demo shows retries surviving a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from saga import ApplicationError, activity


class Transfer(BaseModel):
    """Move ``amount`` from one account to another."""

    source: str
    target: str
    amount: int = Field(gt=0)
    reference: str


class InsufficientFunds(ApplicationError):
    """The source account cannot cover the amount; retrying will not help."""


class InvalidAccount(ApplicationError):
    """No such account; retrying will not help."""


@dataclass
class Bank:
    balances: dict[str, int] = field(default_factory=lambda: {"alice": 100, "bob": 0})
    applied: set[str] = field(default_factory=set)
    deposit_outage: int = 0
    calls: dict[str, int] = field(
        default_factory=lambda: {"withdraw": 0, "deposit": 0, "refund": 0}
    )

    def _account(self, name: str) -> None:
        if name not in self.balances:
            raise InvalidAccount(f"account {name!r} does not exist", non_retryable=True)

    def move(self, op: str, key: str, account: str, delta: int) -> str:
        self.calls[op] += 1
        self._account(account)
        if key in self.applied:
            return key  # already done: a retry or a redelivery changes nothing
        if delta < 0 and self.balances[account] + delta < 0:
            raise InsufficientFunds(
                f"{account} has {self.balances[account]}, needs {-delta}", non_retryable=True
            )
        self.balances[account] += delta
        self.applied.add(key)
        return key

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


bank = Bank()


@activity.defn(queue="bank")
async def withdraw(transfer: Transfer) -> str:
    return bank.move("withdraw", activity.info().idempotency_key, transfer.source, -transfer.amount)


@activity.defn(queue="bank")
async def deposit(transfer: Transfer) -> str:
    if bank.deposit_outage > 0:
        bank.deposit_outage -= 1
        bank.calls["deposit"] += 1
        raise ApplicationError("the bank is unavailable", type="BankUnavailable")
    return bank.move("deposit", activity.info().idempotency_key, transfer.target, transfer.amount)


@activity.defn(queue="bank")
async def refund(transfer: Transfer) -> str:
    return bank.move("refund", activity.info().idempotency_key, transfer.source, transfer.amount)


ACTIVITIES = [withdraw, deposit, refund]

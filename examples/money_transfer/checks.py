"""What the failure explorer checks for money transfer (``saga explore --checks``).

```bash
saga explore --app examples.money_transfer.workflows MoneyTransfer \
    --input '{"source": "alice", "target": "bob", "amount": 30, "reference": "t-1"}' \
    --checks examples.money_transfer.checks
```
"""

from __future__ import annotations

from typing import Any

from saga import WorkflowStatus

from .activities import bank, refund, withdraw

COMPENSATIONS = {withdraw: refund}
"""The refund undoes the withdrawal."""

OPENING = {"alice": 100, "bob": 0}


def reset() -> None:
    """Open the accounts again before a run."""
    bank.reset()


def state() -> dict[str, int]:
    """The balances after a run: the ``services_state`` of the invariant."""
    return dict(bank.balances)


def invariant(balances: dict[str, int], outcome: Any) -> None:
    """Money is neither made nor lost: moved once if COMPLETED, back home otherwise."""
    if outcome.status is WorkflowStatus.COMPENSATION_FAILED:
        return  # the refund failed for good: a human must look
    (transfer,) = outcome.history[0].attributes.args
    moved = transfer["amount"] if outcome.status is WorkflowStatus.COMPLETED else 0
    expected = {
        **OPENING,
        transfer["source"]: OPENING[transfer["source"]] - moved,
        transfer["target"]: OPENING[transfer["target"]] + moved,
    }
    assert balances == expected, f"balances {balances}, expected {expected} ({outcome.status})"

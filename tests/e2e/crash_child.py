"""A process the e2e tests SIGKILL and restart: the whole system on a SQLite file.

    python -m tests.e2e.crash_child STORY DIR PHASE

STORY is ``compensation`` or ``money-transfer``; DIR holds the database and the files
the activities write (what ran, outside the process); PHASE is ``first`` (start the
workflow; the test kills us part-way) or ``restart`` (resume whatever the database says
is unfinished, print the final status, exit 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from examples.money_transfer import activities as bank_activities
from examples.money_transfer.activities import Transfer
from examples.money_transfer.workflows import MoneyTransfer
from saga import ApplicationError, RetryPolicy, Saga, activity, workflow
from saga.errors import WorkflowFailureError
from saga.testing import WorkflowEnvironment

WORKFLOW_ID = "crash-story"
FOLDER = Path(".")
PHASE = "first"


def log_call(*fields: Any) -> None:
    """Append one line to DIR/calls.log: survives the process, unlike its memory."""
    with (FOLDER / "calls.log").open("a") as f:
        f.write(" ".join(str(x) for x in fields) + "\n")


# --- story 1: a crash between two compensations -----------------------------------------------
@activity.defn(queue="crash")
async def book(name: str) -> str:
    log_call("book", name, activity.info().attempt)
    if name == "c":
        raise ApplicationError("c is sold out", type="SoldOut", non_retryable=True)
    return f"{name}-booked"


@activity.defn(queue="crash")
async def unbook(name: str) -> None:
    log_call("unbook", name, activity.info().attempt, PHASE)
    if name == "a" and PHASE == "first":
        (FOLDER / "marker").write_text("second compensation started\n")
        await asyncio.Event().wait()  # the test SIGKILLs us here


@workflow.defn
class ThreeBookings:
    @workflow.run
    async def run(self) -> None:
        options = {
            "start_to_close_timeout": timedelta(minutes=5),
            "retry_policy": RetryPolicy(maximum_attempts=1),
        }
        async with Saga() as saga:  # sequential: undo b, then undo a
            for name in ("a", "b", "c"):
                await workflow.execute_activity(book, name, **options)
                saga.add_compensation(unbook, name, start_to_close_timeout=timedelta(minutes=5))


# --- story 2: the money transfer example, with a bank that outlives the process ---------------
def _load_bank() -> None:
    state = json.loads((FOLDER / "bank.json").read_text())
    bank = bank_activities.bank
    bank.balances = state["balances"]
    bank.applied = set(state["applied"])
    bank.deposit_outage = state["deposit_outage"]


def _save_bank() -> None:
    bank = bank_activities.bank
    state = {
        "balances": bank.balances,
        "applied": sorted(bank.applied),
        "deposit_outage": bank.deposit_outage,
    }
    tmp = FOLDER / "bank.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, FOLDER / "bank.json")  # atomic: a SIGKILL never leaves half a file


def _recorded(fn: Any) -> Any:
    """The example's activity under its own name, logging each call around the real one."""
    name = activity.definition_of(fn).name

    @activity.defn(name=name, queue="bank")
    async def wrapped(transfer: Transfer) -> str:
        _load_bank()
        log_call(name, activity.info().attempt)
        try:
            result: str = await fn(transfer)
            return result
        finally:
            _save_bank()

    return wrapped


BANK_ACTIVITIES = [_recorded(fn) for fn in bank_activities.ACTIVITIES]
TRANSFER = Transfer(source="alice", target="bob", amount=50, reference="crash-1")


# --- main -------------------------------------------------------------------------------------
async def main(story: str) -> int:
    url = f"sqlite+aiosqlite:///{FOLDER / 'saga.db'}"
    if story == "compensation":
        workflows, activities, args = [ThreeBookings], [book, unbook], ()
    else:
        workflows, activities, args = [MoneyTransfer], BANK_ACTIVITIES, (TRANSFER,)
    # The first run waits on real backoffs (so the test can watch retries happen); the
    # restart skips time so the remaining retries cost nothing.
    async with WorkflowEnvironment(
        workflows=workflows,
        activities=activities,
        database_url=url,
        time_skipping=PHASE == "restart",
        sweep_interval=0.5,
    ) as env:
        if PHASE == "first":
            handle = await env.client.start_workflow(workflows[0], *args, id=WORKFLOW_ID)
        else:
            handle = env.client.get_workflow_handle(WORKFLOW_ID)
        try:
            result = await handle.result(timeout=60)
            print(f"COMPLETED {result}", flush=True)
        except WorkflowFailureError as exc:
            print(exc.status, flush=True)
    return 0


if __name__ == "__main__":
    story_arg, folder_arg, PHASE = sys.argv[1:4]
    FOLDER = Path(folder_arg)
    sys.exit(asyncio.run(main(story_arg)))

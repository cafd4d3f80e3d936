"""Money transfers for the multi-coordinator fault tests, with a real ledger.

``E2ETransfer`` withdraws from one account, then deposits into another; if the deposit
fails for good, the withdrawal is refunded (a durable compensation). Each step writes
one row to ``e2e_ledger`` in PostgreSQL (the cluster's own database, named by
``SAGA_E2E_LEDGER_URL``) with ``INSERT … ON CONFLICT (idempotency_key) DO NOTHING``: a
re-executed step (a redelivered task, a republished outbox row, a worker killed after
its write) is applied once, as a real bank's service would. Every raw execution is
also recorded, in ``e2e_ledger_executions`` (``applied`` says whether it wrote the
ledger), so a test can count how many duplicates the key absorbed.

``E2ETimer`` sleeps on a durable timer and returns: the timer-takeover test's workflow.

The bank's queue is ``<SAGA_E2E_QUEUE_PREFIX>-bank``, so each test has its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from saga import ApplicationError, RetryPolicy, Saga, activity, workflow

PREFIX = os.environ.get("SAGA_E2E_QUEUE_PREFIX", "e2e")
BANK = f"{PREFIX}-bank"
LEDGER_URL_ENV = "SAGA_E2E_LEDGER_URL"

Op = Literal["withdraw", "deposit", "refund"]

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS e2e_ledger (
    idempotency_key text PRIMARY KEY,
    workflow_id text NOT NULL,
    op text NOT NULL,
    account text NOT NULL,
    delta bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS e2e_ledger_executions (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL,
    workflow_id text NOT NULL,
    op text NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    applied boolean NOT NULL,
    executed_at timestamptz NOT NULL DEFAULT now()
);
"""
_SCHEMA_LOCK = 0x5A6A  # advisory lock: concurrent CREATE TABLE IF NOT EXISTS can still clash


class TransferRequest(BaseModel):
    """Move ``amount`` from ``source`` to ``target``; and, for the tests, what to disturb."""

    source: str
    target: str
    amount: int = Field(gt=0)
    delay: float = 0.0
    """Seconds of simulated work in every step (keeps sagas in flight)."""
    hold: Op | None = None
    """This step writes ``<hold_file>.waiting`` (its attempt), then waits for ``hold_file``."""
    hold_file: str | None = None
    deposit_failures: int = 0
    """The first N deposit attempts fail with a retryable error."""
    deposit_refused: bool = False
    """The deposit fails for good (the target account is closed): the withdraw is refunded."""


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy ``postgresql+asyncpg://`` URL as a DSN asyncpg accepts."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_ledger(conn: asyncpg.Connection) -> None:
    """Create the ledger tables if missing (safe to run from many processes at once)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(LEDGER_SCHEMA)


class _Ledger:
    """One small connection pool per worker process (and event loop), made on first use."""

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._pool, self._loop, self._lock = None, loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._pool is None:
                url = os.environ.get(LEDGER_URL_ENV)
                if not url:
                    raise ApplicationError(
                        f"{LEDGER_URL_ENV} is not set", type="NoLedger", non_retryable=True
                    )
                pool = await asyncpg.create_pool(
                    asyncpg_dsn(url), min_size=0, max_size=4, timeout=10, command_timeout=10
                )
                async with pool.acquire() as conn:
                    await create_ledger(conn)
                self._pool = pool
            return self._pool


_ledger = _Ledger()


async def _hold(op: Op, request: TransferRequest) -> None:
    if request.hold != op or not request.hold_file:
        return
    release = Path(request.hold_file)
    Path(f"{request.hold_file}.waiting").write_text(str(activity.info().attempt))
    deadline = time.monotonic() + 300
    while not release.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _apply(op: Op, request: TransferRequest, account: str, delta: int) -> str:
    """Write the step's ledger row once per idempotency key; record the execution."""
    info = activity.info()
    await _hold(op, request)
    if request.delay:
        await asyncio.sleep(request.delay)
    pool = await _ledger.pool()
    async with pool.acquire() as conn, conn.transaction():
        applied = await conn.fetchval(
            "INSERT INTO e2e_ledger (idempotency_key, workflow_id, op, account, delta) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING "
            "RETURNING true",
            info.idempotency_key,
            info.workflow_id,
            op,
            account,
            delta,
        )
        await conn.execute(
            "INSERT INTO e2e_ledger_executions "
            "(idempotency_key, workflow_id, op, attempt, pid, applied) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            info.idempotency_key,
            info.workflow_id,
            op,
            info.attempt,
            os.getpid(),
            bool(applied),
        )
    return info.idempotency_key


@activity.defn(queue=BANK)
async def withdraw(request: TransferRequest) -> str:
    return await _apply("withdraw", request, request.source, -request.amount)


@activity.defn(queue=BANK)
async def deposit(request: TransferRequest) -> str:
    if activity.info().attempt <= request.deposit_failures:
        raise ApplicationError("the bank is unavailable", type="BankUnavailable")
    if request.deposit_refused:
        raise ApplicationError(
            f"account {request.target!r} is closed", type="AccountClosed", non_retryable=True
        )
    return await _apply("deposit", request, request.target, request.amount)


@activity.defn(queue=BANK)
async def refund(request: TransferRequest) -> str:
    return await _apply("refund", request, request.source, request.amount)


STEP = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=2),
    non_retryable_error_types=["AccountClosed"],
)
TIMEOUT = timedelta(minutes=5)


@workflow.defn(name="E2ETransfer")
class Transfer:
    @workflow.run
    async def run(self, request: TransferRequest) -> dict[str, str]:
        async with Saga() as saga:
            withdrawn = await workflow.execute_activity(
                withdraw, request, start_to_close_timeout=TIMEOUT, retry_policy=STEP
            )
            saga.add_compensation(refund, request)
            deposited = await workflow.execute_activity(
                deposit, request, start_to_close_timeout=TIMEOUT, retry_policy=STEP
            )
        return {"withdraw": withdrawn, "deposit": deposited}


@workflow.defn(name="E2ETimer")
async def durable_timer(seconds: float) -> str:
    """Sleep on a durable timer, then return the workflow time it woke at."""
    await workflow.sleep(seconds)
    return workflow.now().isoformat()


# --- reading the ledger (tests) ---------------------------------------------------------
async def read_ledger(url: str) -> list[dict[str, Any]]:
    """Every ledger row (one per applied step)."""
    return await _read(url, "SELECT * FROM e2e_ledger ORDER BY applied_at, idempotency_key")


async def read_executions(url: str) -> list[dict[str, Any]]:
    """Every raw execution of a step, applied or absorbed as a duplicate."""
    return await _read(url, "SELECT * FROM e2e_ledger_executions ORDER BY id")


async def _read(url: str, query: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return [dict(row) for row in await conn.fetch(query)]
    except asyncpg.UndefinedTableError:
        return []  # no step has run yet
    finally:
        await conn.close()

"""An e-commerce shop for the HTTP API and console tests, and a console served for real.

``PlaceOrder`` reserves stock, charges, ships, and undoes what it did when a step fails
(``fail_at``); ``AwaitApproval`` waits for an ``approve`` signal under a timer;
``PackOrder`` blocks in ``wait_for_warehouse`` until the test opens ``warehouse``;
``SyncInventory`` fails and waits ten minutes before each retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from saga import ApplicationError, RetryPolicy, Saga, activity, workflow
from saga.http.app import create_app
from saga.http.server import HttpServer
from saga.testing import WorkflowEnvironment

QUEUE = "shop"
ONCE = RetryPolicy(maximum_attempts=1)
STEP = {"start_to_close_timeout": timedelta(minutes=5), "retry_policy": ONCE}

T = TypeVar("T")


class OrderRequest(BaseModel):
    order_id: str
    amount: int
    fail_at: Literal["payment", "shipping"] | None = None


@activity.defn(queue=QUEUE)
async def reserve_stock(order: OrderRequest) -> str:
    return f"stock-{order.order_id}"


@activity.defn(queue=QUEUE)
async def release_stock(reservation: str) -> None:
    return None


@activity.defn(queue=QUEUE)
async def charge_payment(order: OrderRequest) -> str:
    if order.fail_at == "payment":
        raise ApplicationError("card declined", type="PaymentDeclined", non_retryable=True)
    return f"charge-{order.order_id}"


@activity.defn(queue=QUEUE)
async def refund_payment(charge: str) -> None:
    return None


@activity.defn(queue=QUEUE)
async def ship_order(order: OrderRequest) -> str:
    if order.fail_at == "shipping":
        raise ApplicationError("no courier today", type="ShippingFailed", non_retryable=True)
    return f"parcel-{order.order_id}"


class Gate:
    """An event the blocking activity waits on, made in the loop that runs it."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None

    def reset(self) -> None:
        self.event = None

    async def wait(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        await self.event.wait()

    def open(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        self.event.set()


warehouse = Gate()


@activity.defn(queue=QUEUE)
async def wait_for_warehouse(order_id: str) -> str:
    await warehouse.wait()
    return f"packed-{order_id}"


@workflow.defn
class PlaceOrder:
    @workflow.run
    async def run(self, order: OrderRequest) -> dict[str, str]:
        async with Saga() as saga:
            stock = await workflow.execute_activity(reserve_stock, order, **STEP)
            saga.add_compensation(release_stock, stock)
            charge = await workflow.execute_activity(charge_payment, order, **STEP)
            saga.add_compensation(refund_payment, charge)
            parcel = await workflow.execute_activity(ship_order, order, **STEP)
        return {"stock": stock, "charge": charge, "parcel": parcel}


@workflow.defn
class AwaitApproval:
    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.query
    def state(self) -> str:
        return "approved" if self.approved_by else "waiting"

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.wait_condition(lambda: self.approved_by is not None, timeout=3600)
        return f"{order_id} approved by {self.approved_by}"


@workflow.defn
class PackOrder:
    @workflow.run
    async def run(self, order_id: str) -> str:
        async with Saga() as saga:
            stock = await workflow.execute_activity(
                reserve_stock, OrderRequest(order_id=order_id, amount=1), **STEP
            )
            saga.add_compensation(release_stock, stock)
            return await workflow.execute_activity(wait_for_warehouse, order_id, **STEP)


@activity.defn(queue=QUEUE)
async def sync_inventory(sku: str) -> int:
    raise ApplicationError(f"inventory service unavailable for {sku}", type="Unavailable")


@workflow.defn
class SyncInventory:
    @workflow.run
    async def run(self, sku: str) -> int:
        patient = RetryPolicy(initial_interval=timedelta(minutes=10), maximum_attempts=3)
        return await workflow.execute_activity(
            sync_inventory, sku, start_to_close_timeout=timedelta(minutes=1), retry_policy=patient
        )


WORKFLOWS = [PlaceOrder, AwaitApproval, PackOrder, SyncInventory]
ACTIVITIES = [
    reserve_stock,
    release_stock,
    charge_payment,
    refund_payment,
    ship_order,
    wait_for_warehouse,
    sync_inventory,
]


def shop_environment(database_url: str = "sqlite+aiosqlite://") -> WorkflowEnvironment:
    """Coordinator, worker and client for the shop, in this process."""
    return WorkflowEnvironment(
        workflows=WORKFLOWS, activities=ACTIVITIES, database_url=database_url, sweep_interval=0.5
    )


class ServedConsole:
    """The shop and its console on 127.0.0.1:<free port>, in a thread with its own loop.

    Tests that drive a real client (a browser, schemathesis) stay synchronous and reach
    the server over TCP; :meth:`run` executes a coroutine in the server's loop (to start
    workflows or open the warehouse gate there).
    """

    def __init__(
        self, database_url: str, *, api_token: str | None = None, jaeger_url: str | None = None
    ) -> None:
        self.database_url = database_url
        self.api_token = api_token
        self.jaeger_url = jaeger_url
        self.env: WorkflowEnvironment | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="served-console", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        warehouse.reset()
        async with shop_environment(self.database_url) as env:
            self.env = env
            app = create_app(
                env.client,
                api_token=self.api_token or "",
                jaeger_url=self.jaeger_url or "",
                poll_seconds=1.0,
            )
            async with HttpServer(app, "127.0.0.1", 0) as server:
                self.url = server.url
                self._ready.set()
                await self._stop.wait()
            warehouse.open()  # let a blocked activity end before the worker stops

    def start(self) -> ServedConsole:
        self._thread.start()
        if not self._ready.wait(60):
            raise AssertionError("the console did not start within 60 s")
        if self._error is not None:
            raise AssertionError(f"the console did not start: {self._error!r}") from self._error
        return self

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 60) -> T:
        assert self._loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(_as_coro(coro), self._loop)
        return future.result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._error is not None:
            raise AssertionError(f"the console failed: {self._error!r}") from self._error


async def _as_coro(awaitable: Awaitable[T]) -> T:
    return await awaitable


@contextlib.contextmanager
def served_console(database_url: str, **kwargs: Any) -> Iterator[ServedConsole]:
    """A :class:`ServedConsole`, stopped at the end."""
    console = ServedConsole(database_url, **kwargs).start()
    try:
        yield console
    finally:
        console.stop()

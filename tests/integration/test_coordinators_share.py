"""Two coordinators in one process, on real PostgreSQL and RabbitMQ: shards and leases.

The process-level fault tests (SIGKILL, SIGSTOP, database restarts) are in
``tests/e2e/test_cluster_faults.py``; these check the lease protocol's paths quickly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from saga import Client, activity, workflow
from saga.client import shard_of
from saga.coordinator import Coordinator
from saga.transports.rabbitmq import RabbitMQTransport
from saga.worker import Worker
from tests.fixtures.broker import QueueNames

pytestmark = pytest.mark.integration

QUEUE = "share"
TTL = 1.0
WAIT = 30.0


@activity.defn(queue=QUEUE)
async def double(n: int) -> int:
    return 2 * n


@workflow.defn
class Doubles:
    @workflow.run
    async def run(self, n: int) -> int:
        first = await workflow.execute_activity(double, n)
        return await workflow.execute_activity(double, first)


async def until(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110 - state changed by background tasks
            await asyncio.sleep(0.05)
    assert check(), what


class Cluster:
    def __init__(self, database_url: str, broker_url: str) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.coordinators: list[Coordinator] = []

    async def coordinator(self) -> Coordinator:
        coordinator = Coordinator(
            workflows=[Doubles],
            database_url=self.database_url,
            transport=RabbitMQTransport(self.broker_url),
            lease_ttl=TTL,
            migrate=True,
        )
        await coordinator.start()
        self.coordinators.append(coordinator)
        return coordinator


@pytest.fixture
async def cluster(
    postgres_url: str, broker_url: str, make_queue_name: QueueNames
) -> AsyncIterator[Cluster]:
    make_queue_name.used.append(QUEUE)  # deleted after the test
    running = Cluster(postgres_url, broker_url)
    transport = RabbitMQTransport(broker_url)
    worker = Worker(activities=[double], transport=transport)
    await transport.connect()
    await worker.start()
    try:
        yield running
    finally:
        for coordinator in running.coordinators:
            await coordinator.aclose()
            await coordinator.transport.aclose()
        await worker.aclose()
        await transport.aclose()


async def run_sagas(client: Client, prefix: str, count: int) -> list[int]:
    handles = [
        await client.start_workflow(Doubles.run, n, id=f"{prefix}-{n}") for n in range(count)
    ]
    return [await h.result(timeout=WAIT) for h in handles]


async def test_two_coordinators_split_the_shards_and_both_advance_sagas(
    cluster: Cluster, postgres_url: str, broker_url: str
) -> None:
    a = await cluster.coordinator()
    assert len(a.ownership.owned) == 64  # alone: all of them
    b = await cluster.coordinator()
    await until(
        lambda: len(a.ownership.owned) == len(b.ownership.owned) == 32,
        "an even split after b joined",
    )
    assert set(a.ownership.owned).isdisjoint(b.ownership.owned)

    client = await Client.connect(database_url=postgres_url, broker_url=broker_url)
    try:
        assert await run_sagas(client, "split", 20) == [4 * n for n in range(20)]
        shards = {shard_of(f"split-{n}") for n in range(20)}
        assert shards & set(a.ownership.owned) and shards & set(b.ownership.owned)

        await a.aclose()  # a graceful stop hands every shard over at once
        await until(lambda: len(b.ownership.owned) == 64, "b owning everything after a left")
        assert await run_sagas(client, "after", 5) == [4 * n for n in range(5)]
    finally:
        await client.aclose()


async def test_a_shard_taken_behind_an_owners_back_moves_and_its_sagas_continue(
    cluster: Cluster, postgres_url: str, broker_url: str
) -> None:
    a = await cluster.coordinator()
    b = await cluster.coordinator()
    await until(lambda: len(b.ownership.owned) == 32, "an even split")
    moved = next(s for s in sorted(a.ownership.owned))
    workflow_id = next(f"moved-{i}" for i in range(10_000) if shard_of(f"moved-{i}") == moved)

    # As if b's claim won while a was paused: the lease row says b, a does not know yet.
    assert await b.store.claim_shards(b.identity, [moved], TTL, force=True)
    await until(
        lambda: moved in b.ownership.owned and moved not in a.ownership.owned,
        "a stepping back and b adopting the shard",
    )
    client = await Client.connect(database_url=postgres_url, broker_url=broker_url)
    try:
        handle = await client.start_workflow(Doubles.run, 5, id=workflow_id)
        assert await handle.result(timeout=WAIT) == 20
    finally:
        await client.aclose()

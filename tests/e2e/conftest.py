"""Fixtures of the distributed e2e tests (see :mod:`tests.e2e.cluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from saga.transports.base import task_queue_name
from tests.e2e.cluster import Cluster
from tests.fixtures.broker import QueueNames
from tests.fixtures.database import create_database, drop_database, with_database


@contextlib.contextmanager
def database_of_its_own(admin_url: str, run_url: str) -> Iterator[str]:
    """A PostgreSQL database on the run's server, dropped afterwards.

    Not the run's own database (``postgres_url``): that one is emptied after each test
    using it, and processes that outlive a test step must not see that happen.
    """
    name = f"{run_url.rsplit('/', 1)[-1]}_e2e_{secrets.token_hex(3)}"
    asyncio.run(create_database(admin_url, name))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(drop_database(admin_url, name))


@pytest.fixture
def cluster(
    postgres_admin_url: str,
    postgres_url: str,
    broker_url: str,
    make_queue_name: QueueNames,
    tmp_path: Path,
) -> Iterator[Cluster]:
    """Processes of one test; its own database and task queues; all stopped afterwards."""
    prefix = make_queue_name("e2e")
    with database_of_its_own(postgres_admin_url, postgres_url) as db:
        running = Cluster(db, broker_url, tmp_path, prefix)
        make_queue_name.used.extend(running.queues.values())  # deleted after the test
        try:
            yield running
        finally:
            running.stop_all()


async def _delete_queues(broker_url: str, names: list[str]) -> None:
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


@pytest.fixture(scope="module")
def module_cluster(
    postgres_admin_url: str,
    postgres_url: str,
    broker_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Like ``cluster``, shared by the tests of one module (their daemons keep running)."""
    prefix = f"e2e-{secrets.token_hex(4)}"
    with database_of_its_own(postgres_admin_url, postgres_url) as db:
        running = Cluster(db, broker_url, tmp_path_factory.mktemp("cluster"), prefix)
        try:
            yield running
        finally:
            running.stop_all()
            queues = [task_queue_name(q) for q in running.queues.values()]
            asyncio.run(_delete_queues(broker_url, queues))

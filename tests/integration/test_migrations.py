"""The Alembic migrations build exactly saga.store.tables, on both databases, idempotently."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from saga.history import WorkflowStatus
from saga.store.base import WorkflowRecord
from saga.store.sql import SQLStore
from saga.store.tables import metadata, saga_meta
from tests.fixtures.database import create_database, drop_database, with_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched (the shared test database already has one)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    name = f"saga_migrate_{secrets.token_hex(6)}"
    asyncio.run(create_database(admin_url, name))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(drop_database(admin_url, name))


@pytest.fixture
async def inspector_engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(empty_database_url)
    yield engine
    await engine.dispose()


def _differences(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrate_creates_exactly_the_tables_of_the_metadata(
    empty_database_url: str, inspector_engine: AsyncEngine
) -> None:
    async with SQLStore(empty_database_url) as store:
        await store.migrate()

    async with inspector_engine.connect() as conn:
        differences = await conn.run_sync(_differences)
        revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        meta = (await conn.execute(select(saga_meta.c.key, saga_meta.c.value))).all()

    assert differences == []
    assert revision == "0002"
    assert [tuple(row) for row in meta] == [("shard_count", "64")]


async def test_migrating_again_keeps_data_and_changes_nothing(
    empty_database_url: str, inspector_engine: AsyncEngine
) -> None:
    workflow = WorkflowRecord(
        workflow_id="wf",
        run_id="run-1",
        workflow_type="Trip",
        status=WorkflowStatus.RUNNING,
        version=0,
        shard=1,
        input=[],
        start_time=datetime(2024, 5, 1, tzinfo=UTC),
    )
    async with SQLStore(empty_database_url) as store:
        await store.migrate()
        await store.create_workflow(workflow)
        await store.migrate()
        assert await store.get_workflow("wf") == workflow

    async with inspector_engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
        assert await conn.scalar(select(saga_meta.c.value)) == "64"


async def test_stores_starting_together_migrate_once(empty_database_url: str) -> None:
    stores = [SQLStore(empty_database_url) for _ in range(3)]
    for store in stores:
        await store.connect()
    try:
        await asyncio.gather(*(store.migrate() for store in stores))

        assert await stores[0].known_workflow_types() == []
    finally:
        for store in stores:
            await store.aclose()

"""Shard leases in the store, on SQLite and PostgreSQL: claims, renewal, fencing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from saga.errors import ConfigurationError, LeaseLostError
from saga.history import WorkflowStatus
from saga.status import summarize
from saga.store.base import LeaseFence, Member, WorkflowRecord, WorkflowWrite, WriteBatch
from saga.store.sql import SQLStore
from tests.fixtures.database import asyncpg_dsn

TTL = 0.6  # seconds: short, so expiry is quick; waits below poll, never just sleep


def member(name: str, pid: int = 1) -> Member:
    return Member(name, "host", "node", pid, datetime.now(UTC))


async def expired(store: SQLStore, shard: int) -> None:
    """Until the lease of ``shard`` has run out (by the database's clock)."""
    async with asyncio.timeout(10):
        while True:
            state = await store.cluster()
            if shard in state.unowned():
                return
            await asyncio.sleep(0.05)


async def new_workflow(store: SQLStore, workflow_id: str, shard: int) -> None:
    await store.create_workflow(
        WorkflowRecord(
            workflow_id=workflow_id,
            run_id=f"{workflow_id}-run",
            workflow_type="Demo",
            status=WorkflowStatus.RUNNING,
            version=0,
            shard=shard,
            input=[],
            start_time=datetime.now(UTC),
        )
    )


async def test_a_shard_has_one_owner_until_its_lease_expires(store: SQLStore) -> None:
    count = await store.shard_count()
    assert count == 64
    await store.heartbeat(member("a"), TTL, count)
    await store.heartbeat(member("b"), 30, count)
    assert len((await store.cluster()).members) == 2

    assert await store.claim_shards("a", [0, 1], TTL) == {0: 1, 1: 1}
    assert await store.claim_shards("b", [1, 2], 30) == {2: 1}  # 1 is a's

    await expired(store, 1)  # a stops renewing
    assert await store.claim_shards("b", [1], 30) == {1: 2}  # a new owner, a new epoch
    held = await store.renew_leases("a", TTL)
    assert 1 not in held  # a learns it lost shard 1
    assert held == {0: 1}  # its expired lease on 0 nobody took: renewed, same epoch

    state = summarize(await store.cluster())
    owners = {c.identity: c.shards for c in state.coordinators}
    assert owners == {"a": [0], "b": [1, 2]}
    assert state.unowned_shards == list(range(3, 64))
    assert not state.healthy


async def test_a_stale_owner_writes_nothing(store: SQLStore) -> None:
    await store.heartbeat(member("a"), TTL, await store.shard_count())
    assert await store.claim_shards("a", [5], TTL) == {5: 1}
    await new_workflow(store, "w", 5)
    await new_workflow(store, "v", 6)
    write = WorkflowWrite("w", "w-run", expected_version=0)

    await expired(store, 5)
    assert await store.claim_shards("b", [5], TTL) == {5: 2}
    with pytest.raises(LeaseLostError) as lost:
        batch = WriteBatch([write, WorkflowWrite("v", "v-run", 0)], fence=LeaseFence("a", {5: 1}))
        await store.commit(batch)
    assert lost.value.shards == [5]
    assert (await store.get_workflow("w")).version == 0  # type: ignore[union-attr]
    assert (await store.get_workflow("v")).version == 0  # type: ignore[union-attr]

    # The new owner's write, fenced by its own epoch, goes through.
    assert await store.commit(WriteBatch([write], fence=LeaseFence("b", {5: 2}))) == []
    assert (await store.get_workflow("w")).version == 1  # type: ignore[union-attr]


async def test_release_leave_and_forced_claims(store: SQLStore) -> None:
    await store.heartbeat(member("a"), 30, await store.shard_count())
    assert await store.claim_shards("a", [1, 2, 3], 30) == {1: 1, 2: 1, 3: 1}
    await store.release_shards("a", [1])
    assert await store.claim_shards("b", [1, 2], 30) == {1: 2}  # released: free at once
    assert await store.claim_shards("c", [2], 30, force=True) == {2: 2}  # taken from a
    await store.leave("a")
    state = await store.cluster()
    assert [m.member.identity for m in state.members] == []  # only a had a heartbeat row
    assert state.owned_by("a") == []
    assert await store.claim_shards("b", [3], 30) == {3: 2}


async def test_owner_filters_follow_the_leases(store: SQLStore) -> None:
    await store.heartbeat(member("a"), 30, await store.shard_count())
    await store.claim_shards("a", [7], 30)
    await new_workflow(store, "mine", 7)
    await new_workflow(store, "theirs", 8)
    assert await store.workflows_needing_work(owner="a") == ["mine"]
    assert sorted(await store.workflows_needing_work()) == ["mine", "theirs"]
    assert await store.workflows_needing_work(owner="b") == []


async def test_shard_count_is_fixed_once_workflows_exist(store: SQLStore) -> None:
    await store.set_shard_count(16)
    try:
        assert await store.shard_count() == 16
        with pytest.raises(ConfigurationError, match="between 1 and 4096"):
            await store.set_shard_count(0)
        await new_workflow(store, "w", 3)
        with pytest.raises(ConfigurationError, match="fixed once workflows exist"):
            await store.set_shard_count(64)
    finally:  # saga_meta outlives the test on the run's PostgreSQL database
        if store.url.startswith("postgresql"):
            conn = await asyncpg.connect(asyncpg_dsn(store.url))
            try:
                await conn.execute("UPDATE saga_meta SET value = '64' WHERE key = 'shard_count'")
            finally:
                await conn.close()

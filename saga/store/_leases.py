"""Shard leases: which coordinator advances which shard, decided in the database.

A lease row per shard holds its owner, an expiry and an ``epoch`` that grows with each
new owner. Time is the database's (``clock_timestamp()`` on PostgreSQL), so coordinators
on machines whose clocks disagree still agree on who holds what; SQLite serves one
machine, whose clock is the process's. A claim succeeds only on a free or expired
lease, and bumps the epoch: a group commit checks (owner, epoch) of every shard it
touches in its own transaction, so once a lease has moved on, the old owner's writes
are refused however late they arrive (the version fence of each workflow backs this up).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Interval,
    String,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from saga.errors import LeaseLostError
from saga.store._engine import Tx
from saga.store._query import Query
from saga.store.base import LeaseFence, Member, MemberState, ShardLease
from saga.store.tables import UTCDateTime, coordinators, shard_leases

_L = shard_leases.c
_C = coordinators.c
_OWNER = bindparam("b_owner", type_=String())
_SHARD = bindparam("b_shard", type_=Integer())


def _now(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.clock_timestamp(type_=UTCDateTime())
    return bindparam("b_now", type_=UTCDateTime())


def _until(dialect: str) -> ColumnElement[Any]:
    """Now plus the lease time."""
    if dialect == "postgresql":
        return func.clock_timestamp(type_=UTCDateTime()) + bindparam("b_ttl", type_=Interval())
    return bindparam("b_until", type_=UTCDateTime())


def times(ttl: float = 0.0) -> dict[str, Any]:
    """The time parameters every lease statement takes (SQLite uses them, PostgreSQL not)."""
    now = datetime.now(UTC)
    return {"b_now": now, "b_until": now + timedelta(seconds=ttl), "b_ttl": timedelta(seconds=ttl)}


def owned_shards() -> ColumnElement[Any]:
    """The shards ``b_owner`` holds, as a subquery for ``shard IN (...)`` filters."""
    return select(_L.shard).where(_L.owner == _OWNER).scalar_subquery()


def _dialect_insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


_NOW = Query(lambda d: select(_now(d).label("now")))
_ADD_SHARD = Query(
    lambda d: (
        _dialect_insert(d)(shard_leases)
        .values(shard=_SHARD, owner=None, epoch=0, expires_at=_now(d), owner_since=None)
        .on_conflict_do_nothing()
    )
)
_SHARD_ROWS = Query(select(func.count()).select_from(shard_leases))


def _beat(dialect: str) -> Any:
    new = _dialect_insert(dialect)(coordinators).values(
        identity=_OWNER,
        host=bindparam("b_host", type_=String()),
        node=bindparam("b_node", type_=String()),
        pid=bindparam("b_pid", type_=Integer()),
        started_at=bindparam("b_started_at", type_=UTCDateTime()),
        heartbeat_at=_now(dialect),
        expires_at=_until(dialect),
        degraded=bindparam("b_degraded", type_=String()),
        http=bindparam("b_http", type_=String()),
    )
    return new.on_conflict_do_update(
        index_elements=[_C.identity],
        set_={
            "heartbeat_at": new.excluded.heartbeat_at,
            "expires_at": new.excluded.expires_at,
            "degraded": new.excluded.degraded,
            "http": new.excluded.http,
        },
    )


_BEAT = Query(_beat)
_RENEW = Query(
    lambda d: (
        update(shard_leases)
        .where(_L.owner == _OWNER)
        .values(expires_at=_until(d))
        .returning(_L.shard, _L.epoch)
    )
)
_CLAIM = Query(
    lambda d: (
        update(shard_leases)
        .where(_L.shard == _SHARD, or_(_L.owner.is_(None), _L.expires_at < _now(d)))
        .values(owner=_OWNER, epoch=_L.epoch + 1, expires_at=_until(d), owner_since=_now(d))
        .returning(_L.shard, _L.epoch)
    )
)
_STEAL = Query(
    lambda d: (
        update(shard_leases)
        .where(_L.shard == _SHARD)
        .values(owner=_OWNER, epoch=_L.epoch + 1, expires_at=_until(d), owner_since=_now(d))
        .returning(_L.shard, _L.epoch)
    )
)
_RELEASE = Query(
    lambda d: (
        update(shard_leases)
        .where(_L.shard == _SHARD, _L.owner == _OWNER)
        .values(owner=None, expires_at=_now(d), owner_since=None)
    )
)
_RELEASE_ALL = Query(
    lambda d: (
        update(shard_leases)
        .where(_L.owner == _OWNER)
        .values(owner=None, expires_at=_now(d), owner_since=None)
    )
)
_FORGET = Query(delete(coordinators).where(_C.identity == _OWNER))
_HELD = Query(
    lambda d: select(_L.shard, _L.epoch).where(_L.owner == _OWNER, _L.expires_at > _now(d))
)
_LEASES = Query(select(shard_leases).order_by(_L.shard))
_MEMBERS = Query(select(coordinators).order_by(_C.started_at, _C.identity))


async def now(tx: Tx, backend: str) -> datetime:
    """The database's clock (the process's own on SQLite)."""
    if backend != "postgresql":
        return datetime.now(UTC)
    row = await tx.fetchrow(_NOW)
    value: datetime = row.now
    return value


async def heartbeat(tx: Tx, member: Member, ttl: float, shard_count: int) -> None:
    """Upsert the member's row, make sure every shard has a lease row."""
    if (await tx.fetchrow(_SHARD_ROWS))[0] < shard_count:
        await tx.executemany(_ADD_SHARD, [{"b_shard": s, **times()} for s in range(shard_count)])
    params = {
        "b_owner": member.identity,
        "b_host": member.host,
        "b_node": member.node,
        "b_pid": member.pid,
        "b_started_at": member.started_at,
        "b_degraded": member.degraded,
        "b_http": member.http,
        **times(ttl),
    }
    await tx.execute(_BEAT, params)


async def renew(tx: Tx, owner: str, ttl: float) -> dict[int, int]:
    """Extend the owner's leases; {shard: epoch} of those it holds."""
    rows = await tx.fetch(_RENEW, {"b_owner": owner, **times(ttl)})
    return {r.shard: r.epoch for r in rows}


async def claim(
    tx: Tx, owner: str, shards: Sequence[int], ttl: float, *, force: bool
) -> dict[int, int]:
    """Claim each free or expired shard among ``shards`` (any, with ``force``); those won."""
    query = _STEAL if force else _CLAIM
    won: dict[int, int] = {}
    for shard in sorted(shards):  # rows locked in one global order: claims cannot deadlock
        row = await tx.fetchrow(query, {"b_owner": owner, "b_shard": shard, **times(ttl)})
        if row is not None:
            won[row.shard] = row.epoch
    return won


async def release(tx: Tx, owner: str, shards: Sequence[int]) -> None:
    """Free the owner's leases on ``shards`` now."""
    if shards:
        await tx.executemany(
            _RELEASE, [{"b_owner": owner, "b_shard": s, **times()} for s in sorted(shards)]
        )


async def leave(tx: Tx, owner: str) -> None:
    """Free every lease of the owner and forget its heartbeat row."""
    await tx.execute(_RELEASE_ALL, {"b_owner": owner, **times()})
    await tx.execute(_FORGET, {"b_owner": owner})


async def check(tx: Tx, fence: LeaseFence) -> None:
    """Raise LeaseLostError unless every lease of the fence still holds, unexpired."""
    held = {r.shard: r.epoch for r in await tx.fetch(_HELD, {"b_owner": fence.owner, **times()})}
    lost = sorted(s for s, epoch in fence.epochs.items() if held.get(s) != epoch)
    if lost:
        raise LeaseLostError(lost)


async def leases(tx: Tx) -> list[ShardLease]:
    """Every lease row, by shard."""
    return [
        ShardLease(r.shard, r.owner, r.epoch, r.expires_at, r.owner_since)
        for r in await tx.fetch(_LEASES)
    ]


async def members(tx: Tx) -> list[MemberState]:
    """Every heartbeat row (dead members stay until they leave or are reaped)."""
    return [
        MemberState(
            Member(r.identity, r.host, r.node, r.pid, r.started_at, r.degraded, r.http),
            r.heartbeat_at,
            r.expires_at,
        )
        for r in await tx.fetch(_MEMBERS)
    ]

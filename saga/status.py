"""The state of a cluster of coordinators, as ``saga status`` and the HTTP API show it.

Read from the database alone (leases and heartbeat rows), so it answers while every
coordinator is down, which is when an operator asks. Healthy means: every shard held by
a live coordinator, and no live coordinator reporting itself degraded.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from saga.store.base import ClusterState, Store


class CoordinatorStatus(BaseModel):
    """One coordinator's heartbeat row and the shards it holds."""

    identity: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    shards: list[int]
    degraded: str | None
    http: str | None


class ClusterStatus(BaseModel):
    """Coordinators, shard owners and the outbox backlog."""

    shard_count: int
    healthy: bool
    problems: list[str]
    coordinators: list[CoordinatorStatus]
    unowned_shards: list[int]
    outbox_backlog: int


def summarize(state: ClusterState) -> ClusterStatus:
    """Judge the health of what :meth:`Store.cluster` read."""
    coordinators = [
        CoordinatorStatus(
            identity=m.member.identity,
            host=m.member.host,
            pid=m.member.pid,
            started_at=m.member.started_at,
            heartbeat_at=m.heartbeat_at,
            alive=state.alive(m),
            shards=state.owned_by(m.member.identity),
            degraded=m.member.degraded,
            http=m.member.http,
        )
        for m in state.members
    ]
    unowned = state.unowned()
    problems: list[str] = []
    if not any(c.alive for c in coordinators):
        problems.append("no live coordinator")
    if unowned:
        problems.append(f"{len(unowned)} shard(s) without a live owner")
    problems += [
        f"{c.identity} degraded: {c.degraded}" for c in coordinators if c.alive and c.degraded
    ]
    return ClusterStatus(
        shard_count=state.shard_count,
        healthy=not problems,
        problems=problems,
        coordinators=coordinators,
        unowned_shards=unowned,
        outbox_backlog=state.outbox_unsent,
    )


async def cluster_status(store: Store) -> ClusterStatus:
    """Read and judge the cluster's state."""
    return summarize(await store.cluster())


def render_status(status: ClusterStatus, console: Console) -> None:
    """A table of coordinators, then the verdict."""
    table = Table(title=f"{status.shard_count} shards", title_justify="left")
    for column in ("coordinator", "host", "pid", "alive", "shards", "last heartbeat", "degraded"):
        table.add_column(column)
    for c in status.coordinators:
        table.add_row(
            c.identity,
            c.host,
            str(c.pid),
            "yes" if c.alive else "no",
            str(len(c.shards)),
            c.heartbeat_at.isoformat(timespec="seconds"),
            c.degraded or "",
        )
    console.print(table)
    console.print(f"outbox backlog: {status.outbox_backlog} unsent task(s)")
    if status.unowned_shards:
        console.print(f"unowned shards: {status.unowned_shards}")
    console.print("healthy" if status.healthy else "NOT healthy: " + "; ".join(status.problems))
